#!/usr/bin/env bash
# What tests/deploy needs beyond the Python virtualenv, installed from the package registries:
#   * libopencv-dev (Debian/Ubuntu apt): OpenCV 4.x C++ headers and libraries for clients/cpp;
#   * clients/node/node_modules: onnxruntime-node at the version pinned in package-lock.json.
#     Its postinstall script would fetch CUDA/TensorRT binaries from NuGet on Linux x64; it is
#     skipped (--ignore-scripts, ONNXRUNTIME_NODE_INSTALL=skip): the CPU binaries are inside the
#     npm package itself.
# Idempotent; needs root for apt-get (without root the C++ client tests skip, with a note).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f /usr/include/opencv4/opencv2/dnn.hpp ]; then
  echo "setup_deploy_deps: libopencv-dev already installed"
elif command -v apt-get > /dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup_deploy_deps: libopencv-dev is missing and apt-get needs root; the C++ client" >&2
    echo "  tests will be skipped. To run them: sudo apt-get install --no-install-recommends libopencv-dev" >&2
  fi
  echo "setup_deploy_deps: apt-get install libopencv-dev (a few minutes)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libopencv-dev > /dev/null
else
  echo "setup_deploy_deps: no apt-get; install OpenCV's C++ development files yourself" >&2
fi

if command -v npm > /dev/null; then
  lock=clients/node/package-lock.json
  installed=clients/node/node_modules/.package-lock.json
  if [ -f "$installed" ] && [ "$installed" -nt "$lock" ]; then
    echo "setup_deploy_deps: clients/node/node_modules is up to date"
  else
    echo "setup_deploy_deps: npm ci in clients/node (CPU binaries only, no install scripts)"
    (cd clients/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts --no-audit \
      --no-fund --loglevel=error)
  fi
else
  echo "setup_deploy_deps: npm not found; the Node.js client tests will be skipped" >&2
fi
