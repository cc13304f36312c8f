// One detector run on one image: the feeds, the outputs, and the runtimes that compute them.
#pragma once

#include <opencv2/core.hpp>
#include <optional>
#include <string>
#include <vector>

#include "detector_file.hpp"

namespace rpdetect {

struct Feeds {
  cv::Mat image;  // float32 [1, C, H, W] in [0, 1], or uint8 [1, H, W, 3] for uint8-nhwc-*
  cv::Mat noise;  // float32 [1, n, C, H, W]; empty when the graph draws its own (noise="graph")
  std::optional<float> threshold1, threshold2;  // run-time overrides of the file's defaults
};

struct Outputs {
  std::vector<float> logits, score1, score2;
  float score1_max = 0.f, score2_max = 0.f;
  long long label = -1;
  bool is_adversarial = false;
  std::string runtime;  // e.g. "opencv-dnn 4.6.0"
};

// The graph's own rule, for runtimes that cannot feed the threshold inputs.
inline bool verdict(float score1_max, float score2_max, float threshold1, float threshold2) {
  return score1_max > threshold1 || score2_max > threshold2;
}

Outputs run_opencv_dnn(const DetectorFile& file, const Feeds& feeds);
#ifdef RPDETECT_WITH_ONNXRUNTIME
Outputs run_onnxruntime(const DetectorFile& file, const Feeds& feeds, int threads);
#endif

}  // namespace rpdetect
