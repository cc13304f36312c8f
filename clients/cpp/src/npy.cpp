#include "npy.hpp"

#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace rpdetect {

cv::Mat read_npy_float32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  char magic[8];
  if (!in.read(magic, 8) || std::string(magic, 6) != "\x93NUMPY") {
    throw std::runtime_error(path + ": not a .npy file (write it with numpy.save)");
  }
  const int major = static_cast<unsigned char>(magic[6]);
  uint32_t header_len = 0;
  unsigned char len_bytes[4] = {0, 0, 0, 0};
  in.read(reinterpret_cast<char*>(len_bytes), major == 1 ? 2 : 4);
  for (int i = (major == 1 ? 1 : 3); i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  std::string header(header_len, '\0');
  if (!in.read(&header[0], header_len)) throw std::runtime_error(path + ": truncated header");

  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([^']+)'")) || m[1] != "<f4") {
    throw std::runtime_error(path + ": dtype must be float32 ('<f4'); save x.astype(np.float32)");
  }
  if (std::regex_search(header, std::regex("'fortran_order':\\s*True"))) {
    throw std::runtime_error(path + ": Fortran order; save np.ascontiguousarray(x)");
  }
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)"))) {
    throw std::runtime_error(path + ": no shape in the header");
  }
  std::vector<int> dims;
  std::string shape = m[1];
  for (char& c : shape) {
    if (c == ',') c = ' ';
  }
  std::istringstream ss(shape);
  int d;
  while (ss >> d) dims.push_back(d);
  if (dims.empty()) dims.push_back(1);
  cv::Mat out(static_cast<int>(dims.size()), dims.data(), CV_32F);
  if (!in.read(reinterpret_cast<char*>(out.ptr<float>()),
               static_cast<std::streamsize>(out.total() * sizeof(float)))) {
    throw std::runtime_error(path + ": truncated data");
  }
  return out;
}

}  // namespace rpdetect
