// The CUDA engine's kernels (fusex.backends.cupy_engine), compiled at run time by NVRTC through CuPy.
//
// Each kernel is a template over the floating type T (float or double), instantiated by the name expressions
// of fusex.backends._cuda_program ("tv_dual_step<float>", ...).  One thread handles one pixel of one map;
// blockIdx.z indexes the maps (TV) or the batch items (cost terms, gradient step), so a whole batch is one
// launch.  Per-map and per-item scalars are read from small device arrays indexed by blockIdx.z.
//
// The two dual steps (TV and guided) take the same arguments, as do the two primal kernels, so that one
// launch serves either prior: TV reads neither keeps, strengths nor xi.

#ifndef FUSEX_DUAL_FLOOR
#error "compile with -DFUSEX_DUAL_FLOOR=<value> (fusex.backends._cuda_program.OPTIONS)"
#endif

// r = p_cur + beta (p_cur - p_prev), read only inside the image.
template <typename T>
__device__ __forceinline__ T dual_r(const T* cur, const T* prev, T beta, long k) {
    return cur[k] + beta * (cur[k] - prev[k]);
}

// Store (qy, qx) projected onto the unit disc at k; components below FUSEX_DUAL_FLOOR are stored as 0, as the
// numba kernels do (fusex.backends._compiled.DUAL_FLOOR), so that the engines agree.
template <typename T>
__device__ __forceinline__ void store_projected(T qy, T qx, T* py_out, T* px_out, long k) {
    T scale = max(sqrt(qy * qy + qx * qx), (T)1);
    T py = qy / scale;
    T px = qx / scale;
    py_out[k] = fabs(py) >= (T)FUSEX_DUAL_FLOOR ? py : (T)0;
    px_out[k] = fabs(px) >= (T)FUSEX_DUAL_FLOOR ? px : (T)0;
}

// u = P(f + w div r) at (i, j) of map m; the last row of r_y and last column of r_x never enter.
template <typename T>
__device__ __forceinline__ T primal_at(const T* f, const T* py_cur, const T* px_cur, const T* py_prev,
                                       const T* px_prev, T w, T beta, bool nonneg, bool zero_start, int H, int W,
                                       long base, int i, int j) {
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

// The TV dual step of map blockIdx.z: p_out = proj(r + s grad u), u = P(f + w div r).
template <typename T>
__global__ void tv_dual_step(const T* f, const T* weights, const T* steps, const T* keeps, const T* strengths,
                             const T* xi, int maps_per_field, T beta, bool nonneg, bool zero_start,
                             const T* py_prev, const T* px_prev, const T* py_cur, const T* px_cur, T* py_out,
                             T* px_out, int H, int W) {
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
    store_projected(qy, qx, py_out, px_out, k);
}

// out = P(f + w div p) of map blockIdx.z.
template <typename T>
__global__ void tv_primal(const T* f, const T* weights, const T* strengths, const T* xi, int maps_per_field,
                          bool nonneg, const T* py, const T* px, T* out, int H, int W) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= H || j >= W) return;
    long base = (long)blockIdx.z * H * W;
    out[base + (long)i * W + j] = primal_at(f, py, px, py, px, weights[blockIdx.z], (T)0, nonneg, false, H, W,
                                            base, i, j);
}

// v <- P v = v - g xi (xi . v): the directional projection (symmetric, so also its adjoint).
template <typename T>
__device__ __forceinline__ void guided(T& vy, T& vx, T xy, T xx, T g) {
    T along = g * (xy * vy + xx * vx);
    vy -= along * xy;
    vx -= along * xx;
}

// P r at pixel k (field pixel q) of a map, r = p_cur + beta (p_cur - p_prev), 0 when zero_start.
template <typename T>
__device__ __forceinline__ void guided_r(const T* py_cur, const T* px_cur, const T* py_prev, const T* px_prev,
                                         const T* xi_y, const T* xi_x, T beta, T g, bool zero_start, long k, long q,
                                         T& vy, T& vx) {
    vy = zero_start ? (T)0 : dual_r(py_cur, py_prev, beta, k);
    vx = zero_start ? (T)0 : dual_r(px_cur, px_prev, beta, k);
    guided(vy, vx, xi_y[q], xi_x[q], g);
}

// u = P_C(f + w div(P r)) at (i, j); the last row of (P r)_y and last column of (P r)_x never enter.
template <typename T>
__device__ __forceinline__ T guided_primal_at(const T* f, const T* py_cur, const T* px_cur, const T* py_prev,
                                              const T* px_prev, const T* xi_y, const T* xi_x, T w, T beta, T g,
                                              bool nonneg, bool zero_start, int H, int W, long base, int i, int j) {
    long q = (long)i * W + j;
    long k = base + q;
    T vy, vx, div = 0;
    guided_r(py_cur, px_cur, py_prev, px_prev, xi_y, xi_x, beta, g, zero_start, k, q, vy, vx);
    if (i < H - 1) div += vy;
    if (j < W - 1) div += vx;
    if (i > 0) {
        guided_r(py_cur, px_cur, py_prev, px_prev, xi_y, xi_x, beta, g, zero_start, k - W, q - W, vy, vx);
        div -= vy;
    }
    if (j > 0) {
        guided_r(py_cur, px_cur, py_prev, px_prev, xi_y, xi_x, beta, g, zero_start, k - 1, q - 1, vy, vx);
        div -= vx;
    }
    T u = f[k] + w * div;
    return nonneg ? max(u, (T)0) : u;
}

// The Huber / directional-TV dual step of map blockIdx.z (fusex.tv.tv_prox's Notes): p = proj(a r + s P grad u);
// the map takes the direction field xi[m / maps_per_field] (2, H, W).
template <typename T>
__global__ void guided_dual_step(const T* f, const T* weights, const T* steps, const T* keeps, const T* strengths,
                                 const T* xi, int maps_per_field, T beta, bool nonneg, bool zero_start,
                                 const T* py_prev, const T* px_prev, const T* py_cur, const T* px_cur, T* py_out,
                                 T* px_out, int H, int W) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= H || j >= W) return;
    int m = blockIdx.z;
    T w = weights[m], g = strengths[m];
    long plane = (long)H * W;
    const T* xi_y = xi + (long)(m / maps_per_field) * 2 * plane;
    const T* xi_x = xi_y + plane;
    long base = (long)m * plane;
    long q = (long)i * W + j;
    long k = base + q;
#define PRIMAL(ii, jj) \
    guided_primal_at(f, py_cur, px_cur, py_prev, px_prev, xi_y, xi_x, w, beta, g, nonneg, zero_start, H, W, base, ii, jj)
    T u = PRIMAL(i, j);
    T gy = i < H - 1 ? PRIMAL(i + 1, j) - u : (T)0;
    T gx = j < W - 1 ? PRIMAL(i, j + 1) - u : (T)0;
#undef PRIMAL
    guided(gy, gx, xi_y[q], xi_x[q], g);
    T qy = keeps[m] * (zero_start ? (T)0 : dual_r(py_cur, py_prev, beta, k)) + steps[m] * gy;
    T qx = keeps[m] * (zero_start ? (T)0 : dual_r(px_cur, px_prev, beta, k)) + steps[m] * gx;
    store_projected(qy, qx, py_out, px_out, k);
}

// out = P_C(f + w div(P p)) of map blockIdx.z.
template <typename T>
__global__ void guided_primal(const T* f, const T* weights, const T* strengths, const T* xi, int maps_per_field,
                              bool nonneg, const T* py, const T* px, T* out, int H, int W) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= H || j >= W) return;
    int m = blockIdx.z;
    long plane = (long)H * W;
    const T* xi_y = xi + (long)(m / maps_per_field) * 2 * plane;
    out[(long)m * plane + (long)i * W + j] = guided_primal_at(f, py, px, py, px, xi_y, xi_y + plane, weights[m],
                                                              (T)0, strengths[m], nonneg, false, H, W,
                                                              (long)m * plane, i, j);
}

__device__ __forceinline__ double warp_sum(double v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffff, v, offset);
    return v;
}

// Cost terms of the E maps of item blockIdx.z at one pixel; x**(gamma-1) and the HAADF residual are kept
// for the gradient.  weights is (B, E); gm1, eps are per item; sums is (B, 1 + 2E): r^2, then the Poisson
// term and the TV of each map.  Every lane of a warp takes part in each warp_sum, inside the image or not.
// When masked, mask (B, H, W) weighs the HAADF term: m r^2 is summed and m r kept; otherwise it is not read.
template <typename T>
__global__ void evaluate(const T* x, const T* haadf, const T* counts, const T* weights, const T* gm1s,
                         const T* epss, T* x_pow_m1, T* residual, double* sums, int E, int H, int W, const T* mask,
                         bool masked) {
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

// Projected gradient step of the E maps of item blockIdx.z at one pixel (fusex.objectives.gradient_step):
// out = max(x - g, floor), g = coef_c (1 - counts / (x + eps)) - coef_h w x**(gamma-1) r.  coef_h and eps are
// per item, weights and coef_c per map (B, E), residual is (B, H, W); floor is 0, or -inf for the plain step.
template <typename T>
__global__ void gradient_step(const T* x, const T* counts, const T* weights, const T* x_pow_m1, const T* residual,
                              const T* coef_h, const T* coef_c, const T* epss, T floor, T* out, int E, int H, int W) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= H || j >= W) return;
    int n = blockIdx.z;
    long plane = (long)H * W;
    long q = (long)i * W + j;
    T r = residual[(long)n * plane + q];
    T ch = coef_h[n];
    T eps = epss[n];
    for (int e = 0; e < E; ++e) {
        long k = ((long)n * E + e) * plane + q;
        T v = x[k];
        T g = coef_c[n * E + e] * ((T)1 - counts[k] / (v + eps)) - ch * weights[n * E + e] * x_pow_m1[k] * r;
        out[k] = v - g > floor ? v - g : floor;
    }
}
