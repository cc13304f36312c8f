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
  // Overrides go to the graph: threshold1/2 as [n] (one per kappa) in files from rpdetect >= 0.2,
  // as scalars in older ones; threshold3 as a scalar.
  Thresholds t = effective_thresholds(file, feeds);
  const int64_t copies_dims[1] = {static_cast<int64_t>(t.threshold1.size())};
  const size_t rank = file.has_flips ? 1 : 0;
  const size_t count = file.has_flips ? t.threshold1.size() : 1;
  if (feeds.overridden()) {
    in_values.push_back(
        Ort::Value::CreateTensor<float>(cpu, t.threshold1.data(), count, copies_dims, rank));
    in_names.push_back("threshold1");
    in_values.push_back(
        Ort::Value::CreateTensor<float>(cpu, t.threshold2.data(), count, copies_dims, rank));
    in_names.push_back("threshold2");
    if (file.has_flips) {
      in_values.push_back(Ort::Value::CreateTensor<float>(cpu, &t.threshold3, 1, copies_dims, 0));
      in_names.push_back("threshold3");
    }
  }

  std::vector<const char*> out_names = {"logits", "label", "score1", "score2",
                                        "score1_max", "score2_max", "is_adversarial"};
  if (file.has_flips) out_names.push_back("flips");
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
  if (file.has_flips) o.flips = static_cast<long long>(values<int64_t>(outs[7]).at(0));
  return o;
}

}  // namespace rpdetect
