// OpenCV DNN (cv::dnn::readNetFromONNX). OpenCV treats initializers as constants, so the
// threshold inputs cannot be fed: an override is applied here with the graph's rule. OpenCV 4.x
// needs the detector rewritten by lower_for_opencv4.py; OpenCV >= 5 runs it as exported.
#include <opencv2/dnn.hpp>

#include <stdexcept>

#include "runner.hpp"

namespace rpdetect {
namespace {

std::vector<float> values(const cv::Mat& m) {
  const cv::Mat f = m.depth() == CV_32F ? m : [&] { cv::Mat c; m.convertTo(c, CV_32F); return c; }();
  const float* p = f.ptr<float>();
  return std::vector<float>(p, p + f.total());
}

}  // namespace

Outputs run_opencv_dnn(const DetectorFile& file, const Feeds& feeds) {
  cv::dnn::Net net;
  try {
    net = cv::dnn::readNetFromONNX(file.path);
  } catch (const cv::Exception& e) {
#if CV_VERSION_MAJOR < 5
    throw std::runtime_error(file.path + ": OpenCV " CV_VERSION " cannot import it (" + e.err +
                             "). A detector as exported must be rewritten for OpenCV 4.x first: "
                             "python lower_for_opencv4.py " + file.path +
                             " detector-opencv4.onnx; an op that the rewrite does not cover is "
                             "named above");
#else
    throw;
#endif
  }
  net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  cv::Mat image = feeds.image;
#if CV_VERSION_MAJOR < 5
  // OpenCV 4.x blobs are float32: a uint8 frame goes in as float 0..255, which the graph's Cast
  // to float then leaves as it is.
  if (image.depth() != CV_32F) image.convertTo(image, CV_32F);
#endif
  net.setInput(image, "image");
  if (!feeds.noise.empty()) net.setInput(feeds.noise, "noise");

  std::vector<std::string> names = {"logits", "label", "score1", "score2",
                                    "score1_max", "score2_max", "is_adversarial"};
  if (file.has_flips) names.push_back("flips");
  std::vector<cv::Mat> outs;
  net.forward(outs, names);

  Outputs o;
  o.runtime = std::string("opencv-dnn ") + CV_VERSION;
  o.logits = values(outs[0]);
  o.label = static_cast<long long>(values(outs[1]).at(0));
  o.score1 = values(outs[2]);
  o.score2 = values(outs[3]);
  o.score1_max = values(outs[4]).at(0);
  o.score2_max = values(outs[5]).at(0);
  o.is_adversarial = values(outs[6]).at(0) != 0.f;
  if (file.has_flips) o.flips = static_cast<long long>(values(outs[7]).at(0));
  if (feeds.overridden()) o.is_adversarial = verdict(o, effective_thresholds(file, feeds));
  return o;
}

}  // namespace rpdetect
