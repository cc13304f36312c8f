// Read a float32 .npy file (numpy.save, C order) into an N-dimensional cv::Mat.
#pragma once

#include <opencv2/core.hpp>
#include <string>

namespace rpdetect {

cv::Mat read_npy_float32(const std::string& path);

}  // namespace rpdetect
