// C entry points emu_<kernel>_<type>(grid, block, args) for the kernels of kernels.cu, args as in cuLaunchKernel.
template <typename... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

inline dim3 thread_of(unsigned t, const unsigned* b) { return dim3{t % b[0], (t / b[0]) % b[1], t / (b[0] * b[1])}; }

template <typename... A>
void launch(void (*kernel)(A...), bool warps, const unsigned* g, const unsigned* b, void** args) {
    blockDim = dim3{b[0], b[1], b[2]};
    unsigned threads = b[0] * b[1] * b[2];
    for (unsigned z = 0; z < g[2]; ++z)
        for (unsigned y = 0; y < g[1]; ++y)
            for (unsigned x = 0; x < g[0]; ++x) {
                dim3 block{x, y, z};
                if (!warps) {
                    blockIdx = block;
                    for (unsigned t = 0; t < threads; ++t) {
                        threadIdx = thread_of(t, b);
                        call(kernel, args, std::index_sequence_for<A...>{});
                    }
                    continue;
                }
                for (unsigned first = 0; first < threads; first += 32) {
                    Warp warp;
                    std::vector<std::thread> lanes;
                    for (int lane = 0; lane < 32; ++lane)
                        lanes.emplace_back([&, lane] {
                            blockIdx = block;
                            threadIdx = thread_of(first + lane, b);
                            this_warp = &warp;
                            this_lane = lane;
                            call(kernel, args, std::index_sequence_for<A...>{});
                        });
                    for (auto& lane : lanes) lane.join();
                }
            }
}

// One entry point per instantiation; the list follows this header (fake_cupy.RawModule writes it).
#define ENTRY(name, T, warps) \
    extern "C" void emu_##name##_##T(const unsigned* g, const unsigned* b, void** a) { launch(&name<T>, warps, g, b, a); }
