#include "detector_file.hpp"

#include <cstdint>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

namespace rpdetect {
namespace {

constexpr int kMetadataPropsField = 14;  // ModelProto.metadata_props (StringStringEntryProto)
// The keys read here and what their values hold are the detector file's contract, stated once
// in src/rpdetect/contract.py (METADATA_PREFIX, METADATA_KEYS; tensor names in OUTPUTS).
const std::string kPrefix = "rpdetect.";

// Minimal protobuf wire-format reader over one message's bytes.
class Wire {
 public:
  Wire(const uint8_t* data, size_t size, const std::string& where)
      : p_(data), end_(data + size), where_(where) {}

  bool done() const { return p_ >= end_; }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) fail("truncated varint");
      const uint8_t byte = *p_++;
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return value;
    }
    fail("varint longer than 10 bytes");
    return 0;
  }

  // Returns the field number and wire type; the value is read by bytes()/skip().
  std::pair<int, int> tag() {
    const uint64_t t = varint();
    return {static_cast<int>(t >> 3), static_cast<int>(t & 7)};
  }

  std::pair<const uint8_t*, size_t> bytes() {
    const uint64_t len = varint();
    if (len > static_cast<uint64_t>(end_ - p_)) fail("length past the end of the message");
    const uint8_t* start = p_;
    p_ += len;
    return {start, static_cast<size_t>(len)};
  }

  void skip(int wire_type) {
    switch (wire_type) {
      case 0: varint(); break;
      case 1: advance(8); break;
      case 2: bytes(); break;
      case 5: advance(4); break;
      default: fail("unsupported wire type " + std::to_string(wire_type));
    }
  }

 private:
  void advance(size_t n) {
    if (n > static_cast<size_t>(end_ - p_)) fail("truncated field");
    p_ += n;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw FileError(where_ + ": not a readable ONNX model (" + what + ")");
  }

  const uint8_t* p_;
  const uint8_t* end_;
  std::string where_;
};

std::map<std::string, std::string> read_metadata(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path + ": cannot open the model file");
  const std::vector<uint8_t> buf((std::istreambuf_iterator<char>(in)),
                                 std::istreambuf_iterator<char>());
  std::map<std::string, std::string> meta;
  Wire model(buf.data(), buf.size(), path);
  while (!model.done()) {
    const auto [field, wire_type] = model.tag();
    if (field != kMetadataPropsField || wire_type != 2) {
      model.skip(wire_type);
      continue;
    }
    const auto [data, size] = model.bytes();
    Wire entry(data, size, path);
    std::string key, value;
    while (!entry.done()) {
      const auto [f, wt] = entry.tag();
      if ((f == 1 || f == 2) && wt == 2) {
        const auto [s, n] = entry.bytes();
        (f == 1 ? key : value).assign(reinterpret_cast<const char*>(s), n);
      } else {
        entry.skip(wt);
      }
    }
    if (key.compare(0, kPrefix.size(), kPrefix) == 0) meta[key.substr(kPrefix.size())] = value;
  }
  return meta;
}

// Numbers of a JSON list such as "[3, 32, 32]".
std::vector<double> json_numbers(const std::string& text) {
  std::string s = text;
  for (char& c : s) {
    if (c == '[' || c == ']' || c == ',') c = ' ';
  }
  std::istringstream in(s);
  std::vector<double> out;
  double v;
  while (in >> v) out.push_back(v);
  return out;
}

// A threshold entry: "[a, b, ...]" (one per kappa) or one number ("inf" for +inf), each read by
// std::stof, which takes Python's repr of a float, "inf" included.
std::vector<float> threshold_values(const std::string& text, int copies,
                                    const std::string& where) {
  std::string s = text;
  for (char& c : s) {
    if (c == '[' || c == ']' || c == ',') c = ' ';
  }
  std::istringstream in(s);
  std::vector<float> out;
  std::string token;
  while (in >> token) out.push_back(std::stof(token));
  if (out.size() == 1) out.assign(static_cast<size_t>(copies), out[0]);
  if (static_cast<int>(out.size()) != copies) {
    throw FileError(where + ": " + std::to_string(out.size()) + " values for " +
                    std::to_string(copies) + " kappas");
  }
  return out;
}

}  // namespace

DetectorFile read_detector_file(const std::string& path) {
  DetectorFile f;
  f.path = path;
  f.metadata = read_metadata(path);
  auto need = [&](const std::string& key) -> const std::string& {
    const auto it = f.metadata.find(key);
    if (it == f.metadata.end()) {
      throw FileError(path + ": metadata rpdetect." + key +
                      " is missing; is this an rpdetect detector? (build it with `rpdetect export`)");
    }
    return it->second;
  };
  f.input_format = need("input_format");
  f.noise = need("noise");
  f.batch = std::stoi(need("batch"));
  const std::vector<double> chw = json_numbers(need("input_shape"));
  if (chw.size() != 3) throw FileError(path + ": rpdetect.input_shape is not [C, H, W]");
  f.channels = static_cast<int>(chw[0]);
  f.height = static_cast<int>(chw[1]);
  f.width = static_cast<int>(chw[2]);
  f.copies = static_cast<int>(json_numbers(need("kappas")).size());
  f.threshold1 = threshold_values(need("threshold1"), f.copies, path + ": rpdetect.threshold1");
  f.threshold2 = threshold_values(need("threshold2"), f.copies, path + ": rpdetect.threshold2");
  const auto t3 = f.metadata.find("threshold3");
  f.has_flips = t3 != f.metadata.end();
  if (f.has_flips) f.threshold3 = std::stof(t3->second);
  return f;
}

}  // namespace rpdetect
