// What an rpdetect detector .onnx says about itself: the rpdetect.* entries of the model's
// metadata_props, read straight from the protobuf file (no ONNX or protobuf library needed).
#pragma once

#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace rpdetect {

struct DetectorFile {
  std::string path;
  std::string input_format;  // float-nchw | uint8-nhwc-rgb | uint8-nhwc-bgr
  std::string noise;         // graph | input
  int batch = 1;
  int channels = 0, height = 0, width = 0;
  int copies = 0;  // n: number of noise scales (kappas)
  // Defaults stored in the file: one per kappa (a file from rpdetect <= 0.1 holds one value,
  // repeated here), and threshold3 on the flip count (+inf: unused, and in those old files).
  std::vector<float> threshold1, threshold2;
  float threshold3 = std::numeric_limits<float>::infinity();
  bool has_flips = false;  // the graph outputs flipped/flips (rpdetect >= 0.2)
  std::map<std::string, std::string> metadata;  // every rpdetect.* entry, prefix removed
};

struct FileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws FileError naming the file and what is missing.
DetectorFile read_detector_file(const std::string& path);

}  // namespace rpdetect
