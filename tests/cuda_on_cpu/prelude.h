// The CUDA built-ins that fusex/backends/kernels.cu uses, for compiling it as ordinary C++ on the CPU.
//
// A launch runs every thread of the grid in turn, except for kernels that exchange values between the
// lanes of a warp (__shfl_down_sync): those run the 32 lanes of each warp as 32 OS threads that meet at a
// barrier on every exchange, as a warp's lanes do.
#include <barrier>
#include <cmath>
#include <cstddef>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 {
    unsigned x, y, z;
};
thread_local dim3 blockIdx, threadIdx;
dim3 blockDim;

#define __global__
#define __device__
#define __forceinline__ inline
using std::fabs;
using std::log;
using std::max;
using std::pow;
using std::sqrt;

struct Warp {
    std::barrier<> meet{32};
    double lanes[32];
};
thread_local Warp* this_warp = nullptr;
thread_local int this_lane = 0;

inline double __shfl_down_sync(unsigned, double v, int offset) {
    this_warp->lanes[this_lane] = v;
    this_warp->meet.arrive_and_wait();
    double r = this_lane + offset < 32 ? this_warp->lanes[this_lane + offset] : v;
    this_warp->meet.arrive_and_wait();
    return r;
}

std::mutex atomic_lock;
inline void atomicAdd(double* p, double v) {
    std::lock_guard<std::mutex> hold(atomic_lock);
    *p += v;
}
