#!/usr/bin/env bash
# What the arm_emulation tests (tests/backends/test_tvm_arm.py) need to run an aarch64 TVM build on
# this x86 machine: Debian's aarch64 cross compiler and qemu-user-static, and an arm64 sysroot
# holding Debian's python3.11 for arm64 (debs unpacked with dpkg -x, nothing installed for arm64)
# plus the aarch64 wheels of apache-tvm, apache-tvm-ffi and numpy.
#
# Idempotent and cached: a finished sysroot (marked by .complete) is reused as it is. The tests
# find it at $ONNXC_ARM_SYSROOT, default ~/.cache/onnxc/arm64-sysroot, and skip when it is absent.
set -euo pipefail
SYSROOT=${ONNXC_ARM_SYSROOT:-$HOME/.cache/onnxc/arm64-sysroot}
TVM_PINS=(apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 numpy ml_dtypes typing_extensions)
# python3.11 and what its interpreter, stdlib modules and TVM's libraries load.
DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6 zlib1g
      libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libuuid1 libsqlite3-0 libcrypt1 libtinfo6
      libncursesw6 libreadline8 libzstd1)

if [ -f "$SYSROOT/.complete" ]; then
    echo "arm64 sysroot ready at $SYSROOT"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
[ -f /usr/aarch64-linux-gnu/lib/crti.o ] || missing+=(libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
dpkg --print-foreign-architectures | grep -qx arm64 || { $SUDO dpkg --add-architecture arm64; updated=""; }
if [ ${#missing[@]} -gt 0 ] || [ -z "${updated-x}" ]; then
    $SUDO apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

rm -rf "$SYSROOT.partial"
mkdir -p "$SYSROOT.partial/debs"
(cd "$SYSROOT.partial/debs" && apt-get download -qq "${DEBS[@]/%/:arm64}")
for deb in "$SYSROOT.partial"/debs/*.deb; do
    dpkg -x "$deb" "$SYSROOT.partial"
done
rm -rf "$SYSROOT.partial/debs"
python3 -m pip install -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
    --python-version 3.11 --implementation cp --target "$SYSROOT.partial/site-packages" "${TVM_PINS[@]}"
touch "$SYSROOT.partial/.complete"
rm -rf "$SYSROOT"
mv "$SYSROOT.partial" "$SYSROOT"
echo "arm64 sysroot ready at $SYSROOT"
