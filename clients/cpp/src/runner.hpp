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
  // run-time overrides of the file's defaults (one value for every kappa)
  std::optional<float> threshold1, threshold2, threshold3;
  bool overridden() const { return threshold1 || threshold2 || threshold3; }
};

struct Outputs {
  std::vector<float> logits, score1, score2;
  float score1_max = 0.f, score2_max = 0.f;
  long long label = -1;
  long long flips = -1;  // copies whose label changed; -1 for files without the flip count
  bool is_adversarial = false;
  std::string runtime;  // e.g. "opencv-dnn 4.6.0"
};

// The thresholds a run compares against: the file's, with the overrides in their place.
struct Thresholds {
  std::vector<float> threshold1, threshold2;
  float threshold3;
};

inline Thresholds effective_thresholds(const DetectorFile& file, const Feeds& feeds) {
  Thresholds t{file.threshold1, file.threshold2, feeds.threshold3.value_or(file.threshold3)};
  if (feeds.threshold1) t.threshold1.assign(t.threshold1.size(), *feeds.threshold1);
  if (feeds.threshold2) t.threshold2.assign(t.threshold2.size(), *feeds.threshold2);
  return t;
}

// The graph's own rule (rpdetect.rule), for runtimes that cannot feed the threshold inputs:
// any copy over its kappa's threshold1 or threshold2, or more flips than threshold3.
inline bool verdict(const Outputs& o, const Thresholds& t) {
  for (size_t i = 0; i < o.score1.size(); ++i) {
    if (o.score1[i] > t.threshold1.at(i) || o.score2.at(i) > t.threshold2.at(i)) return true;
  }
  return o.flips >= 0 && static_cast<float>(o.flips) > t.threshold3;
}

Outputs run_opencv_dnn(const DetectorFile& file, const Feeds& feeds);
#ifdef RPDETECT_WITH_ONNXRUNTIME
Outputs run_onnxruntime(const DetectorFile& file, const Feeds& feeds, int threads);
#endif

}  // namespace rpdetect
