// Conversion-time check, not part of the service or of the build: dlib's own forward pass of
// dlib_face_recognition_resnet_model_v1.dat, to compare models/convert_dlib.py's ONNX against.
//
// Reads chips as raw RGB bytes (N x 150 x 150 x 3, the service's dlib_5pt_150 crops), writes the
// N x 128 descriptors as little-endian float32. The network type is dlib's face-recognition ResNet
// (dlib/tools/python/src/face_recognition.cpp, anet_type), restated with dlib's layer templates.
//
// Build against the dlib sources of the PyPI sdist (dlib's single-file build, a few minutes):
//   pip download --no-deps --no-binary :all: --no-build-isolation dlib==20.0.1 -d /tmp/dlib
//   tar xzf /tmp/dlib/dlib-20.0.1.tar.gz -C /tmp/dlib
//   g++ -O2 -std=c++17 -DDLIB_NO_GUI_SUPPORT -I/tmp/dlib/dlib-20.0.1 models/dlib_check.cpp \
//       /tmp/dlib/dlib-20.0.1/dlib/all/source.cpp -lpthread -o /tmp/dlib/dlib_check
// then: python -m models.convert_dlib --source ... --dlib-check /tmp/dlib/dlib_check
#include <dlib/dnn.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <vector>

using namespace dlib;

template <template <int, template <typename> class, int, typename> class Block, int N,
          template <typename> class BN, typename SUB>
using residual = add_prev1<Block<N, BN, 1, tag1<SUB>>>;
template <template <int, template <typename> class, int, typename> class Block, int N,
          template <typename> class BN, typename SUB>
using residual_down = add_prev2<avg_pool<2, 2, 2, 2, skip1<tag2<Block<N, BN, 2, tag1<SUB>>>>>>;
template <int N, template <typename> class BN, int STRIDE, typename SUB>
using conv_pair = BN<con<N, 3, 3, 1, 1, relu<BN<con<N, 3, 3, STRIDE, STRIDE, SUB>>>>>;
template <int N, typename SUB> using res = relu<residual<conv_pair, N, affine, SUB>>;
template <int N, typename SUB> using res_down = relu<residual_down<conv_pair, N, affine, SUB>>;

// Input to output: 3 x 32, 4 x 64, 3 x 128, 3 x 256, 1 x 256 residual blocks.
using face_net = loss_metric<fc_no_bias<128, avg_pool_everything<
    res_down<256, res<256, res<256, res_down<256,
    res<128, res<128, res_down<128,
    res<64, res<64, res<64, res_down<64,
    res<32, res<32, res<32,
    max_pool<3, 3, 2, 2, relu<affine<con<32, 7, 7, 2, 2, input_rgb_image_sized<150>>>>>>>>>>>>>>>>>>>>>>;

int main(int argc, char** argv) {
    if (argc != 4) {
        std::cerr << "usage: dlib_check MODEL.dat CHIPS.u8 OUT.f32\n";
        return 2;
    }
    face_net net;
    deserialize(argv[1]) >> net;
    std::ifstream in(argv[2], std::ios::binary);
    const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t chip_bytes = 150 * 150 * 3;
    if (bytes.empty() || bytes.size() % chip_bytes != 0) {
        std::cerr << "expected N x 150 x 150 x 3 bytes, got " << bytes.size() << "\n";
        return 2;
    }
    std::vector<matrix<rgb_pixel>> chips(bytes.size() / chip_bytes);
    for (size_t i = 0; i < chips.size(); ++i) {
        chips[i].set_size(150, 150);
        for (long y = 0; y < 150; ++y)
            for (long x = 0; x < 150; ++x) {
                const unsigned char* p = &bytes[i * chip_bytes + (y * 150 + x) * 3];
                chips[i](y, x) = rgb_pixel(p[0], p[1], p[2]);
            }
    }
    const std::vector<matrix<float, 0, 1>> descriptors = net(chips, 16);
    std::ofstream out(argv[3], std::ios::binary);
    for (const auto& d : descriptors)
        out.write(reinterpret_cast<const char*>(&d(0)), static_cast<std::streamsize>(sizeof(float) * d.size()));
    std::cout << descriptors.size() << " descriptors\n";
    return 0;
}
