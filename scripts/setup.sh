#!/usr/bin/env bash
# Installs what building and testing Keel needs on a fresh Debian 12 machine with a Rust
# toolchain: libclang for the rocksdb crate's bindgen, a C++ compiler for RocksDB itself, and
# iproute2 (`ip`) for the fault tests' network namespaces.
# Protobuf needs nothing here: the proto crate compiles .proto files with protox (pure Rust).
set -euo pipefail

need=()
# bindgen loads libclang at build time; clang's resource headers come with libclang-dev.
# libclang-cpp (which some images carry without libclang) does not count: bindgen needs
# libclang.so or libclang-N.so.
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 \
  && ! ldconfig -p 2>/dev/null | grep -qE 'libclang(-[0-9.]+)?\.so'; then
  need+=(libclang-dev)
fi
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v ip >/dev/null 2>&1 || need+=(iproute2)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install a Rust toolchain (rustup)" >&2; exit 1; }
