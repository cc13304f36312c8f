// ONNX Runtime C++ API (CPU). Built only when CMake finds the ONNX Runtime SDK
// (-DONNXRUNTIME_ROOT=...). Unlike OpenCV, ORT feeds threshold1/threshold2 to the graph itself.
#include <onnxruntime_cxx_api.h>

#include <array>
#include <string>

#include "runner.hpp"

namespace rpdetect {
namespace {

std::vector<int64_t> dims_of(const cv::Mat& m) {
  return std::vector<int64_t>(m.size.p, m.size.p + m.dims);
}

template <typename T>
std::vector<T> values(const Ort::Value& v) {
  const T* p = v.GetTensorData<T>();
  return std::vector<T>(p, p + v.GetTensorTypeAndShapeInfo().GetElementCount());
}

}  // namespace

Outputs run_onnxruntime(const DetectorFile& file, const Feeds& feeds, int threads) {
  Ort::Env env(ORT_LOGGING_LEVEL_ERROR, "rpdetect");  // declared first: outlives the session
  Ort::SessionOptions options;
  if (threads > 0) options.SetIntraOpNumThreads(threads);
  Ort::Session session(env, file.path.c_str(), options);
  const Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);

  std::vector<const char*> in_names;
  std::vector<Ort::Value> in_values;
  const std::vector<int64_t> image_dims = dims_of(feeds.image);
  cv::Mat image = feeds.image;  // CreateTensor wants a mutable pointer; the data is not changed
  if (image.depth() == CV_8U) {
    in_values.push_back(Ort::Value::CreateTensor<uint8_t>(
        cpu, image.ptr<uint8_t>(), image.total(), image_dims.data(), image_dims.size()));
  } else {
    in_values.push_back(Ort::Value::CreateTensor<float>(
        cpu, image.ptr<float>(), image.total(), image_dims.data(), image_dims.size()));
  }
  in_names.push_back("image");
  cv::Mat noise = feeds.noise;
  const std::vector<int64_t> noise_dims = noise.empty() ? std::vector<int64_t>() : dims_of(noise);
  if (!noise.empty()) {
    in_values.push_back(Ort::Value::CreateTensor<float>(
        cpu, noise.ptr<float>(), noise.total(), noise_dims.data(), noise_dims.size()));
    in_names.push_back("noise");
  }
  std::array<float, 2> thresholds = {feeds.threshold1.value_or(file.threshold1),
                                     feeds.threshold2.value_or(file.threshold2)};
  const int64_t scalar_dims[1] = {1};  // shape [] (rank 0): the pointer is not read
  if (feeds.threshold1 || feeds.threshold2) {
    in_values.push_back(Ort::Value::CreateTensor<float>(cpu, &thresholds[0], 1, scalar_dims, 0));
    in_names.push_back("threshold1");
    in_values.push_back(Ort::Value::CreateTensor<float>(cpu, &thresholds[1], 1, scalar_dims, 0));
    in_names.push_back("threshold2");
  }

  const std::array<const char*, 7> out_names = {"logits", "label", "score1", "score2",
                                                "score1_max", "score2_max", "is_adversarial"};
  std::vector<Ort::Value> outs =
      session.Run(Ort::RunOptions{nullptr}, in_names.data(), in_values.data(), in_values.size(),
                  out_names.data(), out_names.size());

  Outputs o;
  o.runtime = std::string("onnxruntime ") + OrtGetApiBase()->GetVersionString();
  o.logits = values<float>(outs[0]);
  o.label = static_cast<long long>(values<int64_t>(outs[1]).at(0));
  o.score1 = values<float>(outs[2]);
  o.score2 = values<float>(outs[3]);
  o.score1_max = values<float>(outs[4]).at(0);
  o.score2_max = values<float>(outs[5]).at(0);
  o.is_adversarial = values<bool>(outs[6]).at(0);
  return o;
}

}  // namespace rpdetect
