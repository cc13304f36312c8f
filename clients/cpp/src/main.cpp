// rpdetect-cpp: decode an image with OpenCV, run an rpdetect detector .onnx, print the verdict
// as one line of JSON.
//
//   rpdetect-cpp --model detector.onnx --image photo.png [--noise noise.npy] [--seed S]
//                [--threshold1 T1] [--threshold2 T2] [--threshold3 T3] [--runtime opencv|onnxruntime] [--threads N]
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>

#include "detector_file.hpp"
#include "npy.hpp"
#include "runner.hpp"

namespace {

const char* kUsage =
    "usage: rpdetect-cpp --model DETECTOR.onnx --image IMAGE [--noise NOISE.npy] [--seed S]\n"
    "                    [--threshold1 T1] [--threshold2 T2] [--threshold3 T3] [--runtime opencv|onnxruntime]\n"
    "                    [--threads N]\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string model, image, noise, runtime = "opencv";
  std::optional<float> threshold1, threshold2, threshold3;
  std::optional<unsigned long long> seed;
  int threads = 0;
};

float parse_float(const std::string& flag, const std::string& text) {
  try {
    size_t used = 0;
    const float v = std::stof(text, &used);
    if (used == text.size() && !std::isnan(v)) return v;
  } catch (const std::exception&) {
  }
  throw UsageError(flag + ": not a number: " + text);
}

unsigned long long parse_count(const std::string& flag, const std::string& text) {
  try {
    size_t used = 0;
    const unsigned long long v = std::stoull(text, &used);
    if (used == text.size() && text[0] != '-') return v;
  } catch (const std::exception&) {
  }
  throw UsageError(flag + ": expected a non-negative integer, got " + text);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (i + 1 >= argc) throw UsageError(flag + " needs a value\n" + kUsage);
    const std::string value = argv[++i];
    if (flag == "--model") a.model = value;
    else if (flag == "--image") a.image = value;
    else if (flag == "--noise") a.noise = value;
    else if (flag == "--runtime") a.runtime = value;
    else if (flag == "--threshold1") a.threshold1 = parse_float(flag, value);
    else if (flag == "--threshold2") a.threshold2 = parse_float(flag, value);
    else if (flag == "--threshold3") a.threshold3 = parse_float(flag, value);
    else if (flag == "--seed") a.seed = parse_count(flag, value);
    else if (flag == "--threads") a.threads = static_cast<int>(parse_count(flag, value));
    else throw UsageError("unknown argument " + flag + "\n" + kUsage);
  }
  if (a.model.empty() || a.image.empty()) {
    throw UsageError(std::string("--model and --image are required\n") + kUsage);
  }
  if (a.runtime != "opencv" && a.runtime != "onnxruntime") {
    throw UsageError("--runtime: expected opencv or onnxruntime, got " + a.runtime);
  }
  return a;
}

// The Python engine's default resize ("shorter-crop"): scale keeping the aspect ratio until the
// picture covers H x W (INTER_AREA to shrink, INTER_LINEAR to grow), then crop the centre.
cv::Mat shorter_crop(const cv::Mat& img, int th, int tw) {
  if (img.rows == th && img.cols == tw) return img;
  const double scale = std::max(static_cast<double>(th) / img.rows,
                                static_cast<double>(tw) / img.cols);
  const int new_h = std::max(th, static_cast<int>(std::nearbyint(img.rows * scale)));
  const int new_w = std::max(tw, static_cast<int>(std::nearbyint(img.cols * scale)));
  const int interp = new_h * new_w < img.rows * img.cols ? cv::INTER_AREA : cv::INTER_LINEAR;
  cv::Mat out;
  cv::resize(img, out, cv::Size(new_w, new_h), 0, 0, interp);
  return out(cv::Rect((new_w - tw) / 2, (new_h - th) / 2, tw, th)).clone();
}

// Decode to what the graph's image input takes: float32 [1, C, H, W] RGB (or luma) in [0, 1]
// for float-nchw, uint8 [1, H, W, 3] RGB or BGR for uint8-nhwc-*.
cv::Mat load_image(const std::string& path, const rpdetect::DetectorFile& f) {
  if (f.channels != 1 && f.channels != 3) {
    throw std::runtime_error(f.path + ": " + std::to_string(f.channels) +
                             "-channel input; this client decodes 1- or 3-channel images");
  }
  cv::Mat img = cv::imread(path, cv::IMREAD_COLOR);  // 8-bit BGR
  if (img.empty()) throw std::runtime_error(path + ": cannot decode the image (OpenCV imread)");
  img = shorter_crop(img, f.height, f.width);
  if (f.input_format == "uint8-nhwc-bgr" || f.input_format == "uint8-nhwc-rgb") {
    if (f.input_format == "uint8-nhwc-rgb") cv::cvtColor(img, img, cv::COLOR_BGR2RGB);
    const int dims[] = {1, f.height, f.width, 3};
    return cv::Mat(4, dims, CV_8U, img.data).clone();
  }
  if (f.input_format != "float-nchw") {
    throw std::runtime_error(f.path + ": unknown input_format " + f.input_format);
  }
  cv::cvtColor(img, img, f.channels == 1 ? cv::COLOR_BGR2GRAY : cv::COLOR_BGR2RGB);
  const int dims[] = {1, f.channels, f.height, f.width};
  cv::Mat blob(4, dims, CV_32F);
  float* out = blob.ptr<float>();
  const size_t plane = static_cast<size_t>(f.height) * f.width;
  for (int y = 0; y < f.height; ++y) {
    const uint8_t* row = img.ptr<uint8_t>(y);
    for (int x = 0; x < f.width; ++x) {
      for (int c = 0; c < f.channels; ++c) {  // HWC -> CHW, x / 255 as the Python engine does
        out[c * plane + static_cast<size_t>(y) * f.width + x] = row[x * f.channels + c] / 255.0f;
      }
    }
  }
  return blob;
}

// N(0, 1) noise [1, n, C, H, W] for a noise="input" detector when no --noise file is given.
cv::Mat draw_noise(const rpdetect::DetectorFile& f, std::optional<unsigned long long> seed) {
  const int dims[] = {1, f.copies, f.channels, f.height, f.width};
  cv::Mat noise(5, dims, CV_32F);
  std::mt19937_64 gen(seed ? *seed : std::random_device{}());
  std::normal_distribution<float> normal(0.f, 1.f);
  float* p = noise.ptr<float>();
  for (size_t i = 0; i < noise.total(); ++i) p[i] = normal(gen);
  return noise;
}

void check_noise(const cv::Mat& noise, const rpdetect::DetectorFile& f, const std::string& path) {
  const int want[] = {1, f.copies, f.channels, f.height, f.width};
  bool same = noise.dims == 5;
  for (int i = 0; same && i < 5; ++i) same = noise.size[i] == want[i];
  if (!same) {
    std::ostringstream got;
    for (int i = 0; i < noise.dims; ++i) got << (i ? ", " : "") << noise.size[i];
    throw std::runtime_error(path + ": noise must be float32 [1, " + std::to_string(f.copies) +
                             ", " + std::to_string(f.channels) + ", " + std::to_string(f.height) +
                             ", " + std::to_string(f.width) + "], got [" + got.str() + "]");
  }
}

std::string json_number(double v) {
  if (std::isinf(v)) return v > 0 ? "\"inf\"" : "\"-inf\"";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);  // float32 round-trips in 9 digits
  return buf;
}

std::string json_list(const std::vector<float>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + json_number(v[i]);
  return s + "]";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse_args(argc, argv);
    const rpdetect::DetectorFile file = rpdetect::read_detector_file(args.model);
    if (file.batch != 1) {
      throw std::runtime_error(args.model + ": built for batch " + std::to_string(file.batch) +
                               "; this client runs one image (export with --batch 1)");
    }
    rpdetect::Feeds feeds;
    feeds.image = load_image(args.image, file);
    if (file.noise == "input") {
      feeds.noise = args.noise.empty() ? draw_noise(file, args.seed)
                                       : rpdetect::read_npy_float32(args.noise);
      check_noise(feeds.noise, file, args.noise.empty() ? args.model : args.noise);
    } else if (!args.noise.empty()) {
      throw std::runtime_error(args.model + ": draws its own noise (noise=\"graph\"); drop --noise");
    }
    feeds.threshold1 = args.threshold1;  // one given: the others keep the file's defaults
    feeds.threshold2 = args.threshold2;
    if (args.threshold3 && !file.has_flips) {
      throw std::runtime_error(args.model + ": no flip count in this file (rpdetect <= 0.1); "
                               "drop --threshold3 or re-export it");
    }
    feeds.threshold3 = args.threshold3;

    rpdetect::Outputs out;
    if (args.runtime == "onnxruntime") {
#ifdef RPDETECT_WITH_ONNXRUNTIME
      out = rpdetect::run_onnxruntime(file, feeds, args.threads);
#else
      throw std::runtime_error(
          "--runtime onnxruntime: this build has no ONNX Runtime; rebuild with "
          "-DONNXRUNTIME_ROOT=/path/to/onnxruntime-sdk");
#endif
    } else {
      out = rpdetect::run_opencv_dnn(file, feeds);
    }
    const rpdetect::Thresholds t = rpdetect::effective_thresholds(file, feeds);
    std::cout << "{\"runtime\":\"" << out.runtime << "\",\"label\":" << out.label
              << ",\"is_adversarial\":" << (out.is_adversarial ? "true" : "false")
              << ",\"score1_max\":" << json_number(out.score1_max)
              << ",\"score2_max\":" << json_number(out.score2_max)
              << ",\"flips\":" << (out.flips >= 0 ? std::to_string(out.flips) : "null")
              << ",\"threshold1\":" << json_list(t.threshold1)
              << ",\"threshold2\":" << json_list(t.threshold2)
              << ",\"threshold3\":" << json_number(t.threshold3)
              << ",\"logits\":" << json_list(out.logits) << ",\"score1\":" << json_list(out.score1)
              << ",\"score2\":" << json_list(out.score2) << "}" << std::endl;
    return 0;
  } catch (const UsageError& e) {
    std::cerr << "rpdetect-cpp: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {  // cv::Exception and Ort::Exception derive from it
    std::cerr << "rpdetect-cpp: error: " << e.what() << "\n";
    return 1;
  }
}
