"""CUDA C source of the fused GPU kernels (compiled at run time by CuPy).

``T`` is replaced by ``float`` or ``double``.  One thread handles one pixel
of one map; ``blockIdx.z`` indexes the maps (TV) or the batch items (cost
terms), so a whole batch is one launch.  Per-map and per-item scalars are
read from small device arrays indexed by ``blockIdx.z``.
"""

TV_KERNELS = r"""
extern "C" {

// r = p_cur + beta (p_cur - p_prev), read only inside the image.
__device__ __forceinline__ T dual_r(const T* cur, const T* prev, T beta, long k) {
    return cur[k] + beta * (cur[k] - prev[k]);
}

// u = P(f + w div r) at (i, j) of map m; the last row of r_y and last column of r_x never enter.
__device__ __forceinline__ T primal_at(const T* f, const T* py_cur, const T* px_cur, const T* py_prev,
                                       const T* px_prev, T w, T beta, bool nonneg, bool zero_start,
                                       int H, int W, long base, int i, int j) {
    long k = base + (long)i * W + j;
    T u = f[k];
    if (!zero_start) {
        T div = 0;
        if (i < H - 1) div += dual_r(py_cur, py_prev, beta, k);
        if (i > 0) div -= dual_r(py_cur, py_prev, beta, k - W);
        if (j < W - 1) div += dual_r(px_cur, px_prev, beta, k);
        if (j > 0) div -= dual_r(px_cur, px_prev, beta, k - 1);
        u += w * div;
    }
    return nonneg ? max(u, (T)0) : u;
}

__global__ void dual_step_T(const T* f, const T* weights, const T* steps, T beta, bool nonneg, bool zero_start,
                            const T* py_prev, const T* px_prev, const T* py_cur, const T* px_cur,
                            T* py_out, T* px_out, int H, int W) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= H || j >= W) return;
    T w = weights[blockIdx.z];
    T step = steps[blockIdx.z];
    long base = (long)blockIdx.z * H * W;
    long k = base + (long)i * W + j;
#define PRIMAL(ii, jj) primal_at(f, py_cur, px_cur, py_prev, px_prev, w, beta, nonneg, zero_start, H, W, base, ii, jj)
    T u = PRIMAL(i, j);
    T gy = i < H - 1 ? PRIMAL(i + 1, j) - u : (T)0;
    T gx = j < W - 1 ? PRIMAL(i, j + 1) - u : (T)0;
#undef PRIMAL
    T qy = (zero_start ? (T)0 : dual_r(py_cur, py_prev, beta, k)) + step * gy;
    T qx = (zero_start ? (T)0 : dual_r(px_cur, px_prev, beta, k)) + step * gx;
    T scale = max(sqrt(qy * qy + qx * qx), (T)1);
    py_out[k] = qy / scale;
    px_out[k] = qx / scale;
}

__global__ void primal_T(const T* f, const T* weights, bool nonneg, const T* py, const T* px, T* out, int H,
                         int W) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= H || j >= W) return;
    long base = (long)blockIdx.z * H * W;
    out[base + (long)i * W + j] = primal_at(f, py, px, py, px, weights[blockIdx.z], (T)0, nonneg, false, H, W,
                                            base, i, j);
}

__device__ __forceinline__ double warp_sum(double v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffff, v, offset);
    return v;
}

// Cost terms of the E maps of item blockIdx.z at one pixel; x**(gamma-1) and the HAADF residual are kept
// for the gradient.  weights is (B, E); gm1, eps are per item; sums is (B, 1 + 2E): r^2, then the Poisson
// term and the TV of each map.  Every lane of a warp takes part in each warp_sum, inside the image or not.
// When masked, mask (B, H, W) weighs the HAADF term: m r^2 is summed and m r kept; otherwise it is not read.
__global__ void evaluate_T(const T* x, const T* haadf, const T* counts, const T* weights, const T* gm1s,
                           const T* epss, T* x_pow_m1, T* residual, double* sums, int E, int H, int W,
                           const T* mask, bool masked) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    int n = blockIdx.z;
    bool inside = i < H && j < W;
    bool lead = ((threadIdx.y * blockDim.x + threadIdx.x) & 31) == 0;
    double* out = sums + (long)n * (1 + 2 * E);
    long plane = (long)H * W;
    long first = (long)n * E * plane + (long)i * W + j;
    T model = 0;
    for (int e = 0; e < E; ++e) {
        double poisson = 0, tv = 0;
        if (inside) {
            long k = first + e * plane;
            T v = x[k];
            T pw = pow(v, gm1s[n]);
            x_pow_m1[k] = pw;
            model += weights[n * E + e] * pw * v;
            poisson = (double)(v - counts[k] * log(v + epss[n]));
            T dy = i < H - 1 ? x[k + W] - v : (T)0;
            T dx = j < W - 1 ? x[k + 1] - v : (T)0;
            tv = (double)sqrt(dy * dy + dx * dx);
        }
        poisson = warp_sum(poisson);
        tv = warp_sum(tv);
        if (lead) {
            atomicAdd(out + 1 + e, poisson);
            atomicAdd(out + 1 + E + e, tv);
        }
    }
    double sq = 0;
    if (inside) {
        long p = (long)n * plane + (long)i * W + j;
        T r = haadf[p] - model;
        sq = (double)r * (double)r;
        if (masked) {
            sq *= (double)mask[p];
            r *= mask[p];
        }
        residual[p] = r;
    }
    sq = warp_sum(sq);
    if (lead) atomicAdd(out, sq);
}

}
"""

GRADIENT_STEP = (
    "T x, T counts, T w, T x_pow_m1, T residual, T coef_h, T coef_c, T eps",
    "T out",
    "T g = coef_c * ((T)1 - counts / (x + eps)) - coef_h * w * x_pow_m1 * residual;out = x - g > (T)0 ? x - g : (T)0;",
)
