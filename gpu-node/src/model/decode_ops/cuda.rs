//! The CUDA side of the decode operations: the fatbin that `build.rs` compiles from
//! `cuda/decode.cu`, loaded once per device without JIT, and one launcher per operation.

use super::DecodeAttention;
use candle_core::cuda_backend::cudarc::driver as cudarc_launch;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaModule, CudaView, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::{CudaDevice, CudaStorage, CudaStorageSlice as S, DeviceId};
use candle_core::{Layout, Result, Shape, Storage, Tensor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

// SAFETY: `L2Ranges` is `#[repr(C)]` plain data laid out as `cuda/decode.cu`'s
// `L2Ranges` (8 u64 addresses, then 8 u64 lengths), which the kernels take by value.
unsafe impl cudarc_launch::DeviceRepr for crate::model::l2_prefetch::L2Ranges {}

/// See [`super::dense_extent`].
pub(super) fn dense_extent(t: &Tensor) -> Result<crate::model::l2_prefetch::Extent> {
    if !matches!(
        t.dtype(),
        candle_core::DType::F32 | candle_core::DType::F16 | candle_core::DType::BF16
    ) {
        candle_core::bail!("the fused decode step's weights are f32, f16 or bf16");
    }
    Ok(crate::model::l2_prefetch::Extent {
        ptr: device_ptr(t)?,
        bytes: (t.elem_count() * t.dtype().size_in_bytes()) as u64,
    })
}

/// The device address of a contiguous CUDA tensor's first element (f32, f16, bf16 or
/// u32); the tensor must outlive every launch that is given it.
pub(crate) fn device_ptr(t: &Tensor) -> Result<u64> {
    use cudarc_launch::DevicePtr;
    let (st, l) = t.storage_and_layout();
    let Storage::Cuda(c) = &*st else {
        candle_core::bail!("the tensor is not on the GPU");
    };
    let o = contiguous_start(l, "a static step's tensor")?;
    let stream = c.device.cuda_stream();
    let (ptr, size) = match &c.slice {
        S::F32(v) => (v.device_ptr(&stream).0, 4),
        S::F16(v) => (v.device_ptr(&stream).0, 2),
        S::BF16(v) => (v.device_ptr(&stream).0, 2),
        S::U32(v) => (v.device_ptr(&stream).0, 4),
        _ => candle_core::bail!("a static step's tensors are f32, f16, bf16 or u32"),
    };
    Ok(ptr + (o * size) as u64)
}

/// The kernel `name` of the decode fatbin on `dev` (an error for a name
/// [`super::kernel_names`] does not list).
pub(crate) fn named_kernel(dev: &CudaDevice, name: &str) -> Result<(&'static str, CudaFunction)> {
    let name = kernel_name(name)?;
    Ok((name, function(dev, name)?))
}

/// The fatbin `build.rs` made from `cuda/decode.cu`.
static FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/decode.fatbin"));

type Functions = HashMap<(DeviceId, &'static str), CudaFunction>;
/// Loaded modules and functions, per device.
type Loaded = Mutex<(HashMap<DeviceId, Arc<CudaModule>>, Functions)>;

fn err(what: &str, e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("{what}: {e}"))
}

/// The kernel `name` on `dev`, loaded from the fatbin once per device.
fn function(dev: &CudaDevice, name: &'static str) -> Result<CudaFunction> {
    static MODULES: OnceLock<Loaded> = OnceLock::new();
    let lock = MODULES.get_or_init(|| Mutex::new((HashMap::new(), HashMap::new())));
    let mut g = lock
        .lock()
        .map_err(|_| err("decode kernels", "a thread panicked while loading them"))?;
    if let Some(f) = g.1.get(&(dev.id(), name)) {
        return Ok(f.clone());
    }
    let module = match g.0.get(&dev.id()) {
        Some(m) => m.clone(),
        None => {
            let ctx = dev.cuda_stream().context().clone();
            let m = ctx
                .load_module(Ptx::from_binary(FATBIN.to_vec()))
                .map_err(|e| {
                    err(
                        "cannot load the decode kernels (gpu-node/cuda/decode.cu)",
                        e,
                    )
                })?;
            g.0.insert(dev.id(), m.clone());
            m
        }
    };
    let f = module
        .load_function(name)
        .map_err(|e| err(&format!("decode kernel {name}"), e))?;
    g.1.insert((dev.id(), name), f.clone());
    Ok(f)
}

/// The kernel `name` of decode.cu (names are built from dtype, rows, head size), as
/// the `&'static str` the function cache keys on; an error for a name it does not have.
fn kernel_name(name: &str) -> Result<&'static str> {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        super::kernel_names()
            .into_iter()
            .map(|s| &*Box::leak(s.into_boxed_str()))
            .collect()
    });
    names
        .iter()
        .find(|n| **n == name)
        .copied()
        .ok_or_else(|| err("decode kernels", format!("no kernel {name}")))
}

/// The kernel `prefix_{dtype suffix}{rest}` on `dev`.
fn kernel(
    dev: &CudaDevice,
    prefix: &str,
    sfx: &str,
    rest: &str,
) -> Result<(&'static str, CudaFunction)> {
    let name = kernel_name(&format!("{prefix}_{sfx}{rest}"))?;
    Ok((name, function(dev, name)?))
}

fn contiguous_start(l: &Layout, what: &str) -> Result<usize> {
    match l.contiguous_offsets() {
        Some((a, _)) => Ok(a),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

fn int(x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| err("decode kernels", format!("{x} exceeds i32")))
}

/// Runs `f` with a device view of the step's u32 index buffer.
fn with_idx<R>(idx: &Tensor, f: impl FnOnce(&CudaView<'_, u32>) -> Result<R>) -> Result<R> {
    with_u32(idx, "the decode index buffer", f)
}

/// `f` on a device view of a contiguous `u32` tensor (`what` names it in errors).
fn with_u32<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&CudaView<'_, u32>) -> Result<R>,
) -> Result<R> {
    let (st, l) = t.storage_and_layout();
    let Storage::Cuda(c) = &*st else {
        candle_core::bail!("{what} is not on the GPU");
    };
    let v = c
        .as_cuda_slice::<u32>()?
        .slice(contiguous_start(l, what)?..);
    f(&v)
}

/// A float slice of a storage (by dtype suffix) from a layout's contiguous start, for
/// passing as a kernel argument.
fn view<'a>(s: &'a S, l: &Layout, what: &str) -> Result<(&'static str, Arg<'a>)> {
    let o = contiguous_start(l, what)?;
    Ok(match s {
        S::F32(v) => ("f32", Arg::F32(v.slice(o..))),
        S::F16(v) => ("f16", Arg::F16(v.slice(o..))),
        S::BF16(v) => ("bf16", Arg::BF16(v.slice(o..))),
        _ => candle_core::bail!("{what}: the decode kernels take f32, f16 or bf16"),
    })
}

/// A device view of one of the float dtypes.
enum Arg<'a> {
    F32(CudaView<'a, f32>),
    F16(CudaView<'a, half::f16>),
    BF16(CudaView<'a, half::bf16>),
}

fn push<'a>(lb: &mut cudarc_launch::LaunchArgs<'a>, a: &'a Arg<'_>) {
    match a {
        Arg::F32(v) => lb.arg(v),
        Arg::F16(v) => lb.arg(v),
        Arg::BF16(v) => lb.arg(v),
    };
}

/// A side tensor (norm weights, bias, residual, RoPE tables) on the device.
fn side<'a>(
    t: &'a Option<candle_core::Tensor>,
) -> Option<(candle_core::StorageRef<'a>, &'a Layout)> {
    t.as_ref().map(|t| t.storage_and_layout())
}

fn side_arg<'a>(
    g: &'a Option<(candle_core::StorageRef<'_>, &Layout)>,
    what: &str,
) -> Result<Option<Arg<'a>>> {
    match g {
        None => Ok(None),
        Some((st, l)) => match &**st {
            Storage::Cuda(c) => Ok(Some(view(&c.slice, l, what)?.1)),
            _ => candle_core::bail!("{what} is not on the GPU"),
        },
    }
}

/// An optional side argument, or a null pointer (`null`, which must outlive the launch).
fn push_opt<'a>(lb: &mut cudarc_launch::LaunchArgs<'a>, a: &'a Option<Arg<'_>>, null: &'a u64) {
    match a {
        Some(a) => push(lb, a),
        None => {
            lb.arg(null);
        }
    }
}

/// The `PRO` template argument of the fused GEMV kernels for a prologue.
fn prologue_code(p: &super::Prologue) -> u8 {
    match p {
        super::Prologue::None => 0,
        super::Prologue::Norm(_) => 1,
        super::Prologue::SiluMul => 2,
    }
}

fn alloc_like(dev: &CudaDevice, like: &str, n: usize) -> Result<S> {
    // SAFETY: every element is written by the kernel that receives it.
    Ok(unsafe {
        match like {
            "f32" => S::F32(dev.alloc::<f32>(n)?),
            "f16" => S::F16(dev.alloc::<half::f16>(n)?),
            _ => S::BF16(dev.alloc::<half::bf16>(n)?),
        }
    })
}

fn push_out<'a>(lb: &mut cudarc_launch::LaunchArgs<'a>, s: &'a mut S) {
    match s {
        S::F32(v) => lb.arg(v),
        S::F16(v) => lb.arg(v),
        S::BF16(v) => lb.arg(v),
        _ => lb.arg(&0u64),
    };
}

fn launch(name: &str, lb: &mut cudarc_launch::LaunchArgs<'_>, cfg: LaunchConfig) -> Result<()> {
    // SAFETY: every caller pushes the argument list of the kernel `name` of decode.cu,
    // with shapes its operation checked (`dims`/`takes`) and slot indices below the
    // cache's slots or PAD_SLOT (checked by the engine before the step).
    unsafe { lb.launch(cfg) }.map_err(|e| err(name, e))?;
    Ok(())
}

/// Writes a step's keys or values into the cache (`KvWrite`).
#[allow(clippy::too_many_arguments)]
pub(super) fn kv_write(
    b: usize,
    (nkv, cap, hd): (usize, usize, usize),
    cache: &mut CudaStorage,
    lc: &Layout,
    src: &CudaStorage,
    ls: &Layout,
    idx: &CudaStorage,
    li: &Layout,
) -> Result<()> {
    if lc.start_offset() != 0 || !lc.is_contiguous() {
        candle_core::bail!("kv write: the cache must be a whole contiguous tensor");
    }
    let dev = cache.device.clone();
    let (sfx, sa) = view(&src.slice, ls, "keys")?;
    let (name, f) = kernel(&dev, "kv_write", sfx, "")?;
    let i = idx
        .as_cuda_slice::<u32>()?
        .slice(contiguous_start(li, "the index buffer")?..);
    let n = b * nkv * hd;
    let (bi, nkvi, capi, hdi) = (int(b)?, int(nkv)?, int(cap)?, int(hd)?);
    let stream = dev.cuda_stream();
    let mut lb = stream.launch_builder(&f);
    push(&mut lb, &sa);
    push_out(&mut lb, &mut cache.slice);
    lb.arg(&i).arg(&bi).arg(&nkvi).arg(&capi).arg(&hdi);
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(256).max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch(name, &mut lb, cfg)
}

/// Decode attention (`DecodeAttention`): the block-wide kernel split over the keys (and
/// its merge) for head size 64, 128 or 256, the warp-per-key one otherwise.
pub(super) fn decode_attention(
    op: &DecodeAttention,
    (nkv, cap, hd): (usize, usize, usize),
    (q, lq): (&CudaStorage, &Layout),
    (k, lk): (&CudaStorage, &Layout),
    (v, lv): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let dev = q.device.clone();
    let (sfx, qa) = view(&q.slice, lq, "the query")?;
    let (_, ka) = view(&k.slice, lk, "the key cache")?;
    let (_, va) = view(&v.slice, lv, "the value cache")?;
    let wide = match hd {
        64 => Some("_1"),
        128 => Some("_2"),
        256 => Some("_4"),
        _ => None,
    };
    let (name, f) = match wide {
        Some(g) => kernel(&dev, "decode_attn64", sfx, g)?,
        None => kernel(&dev, "decode_attn", sfx, "")?,
    };
    let mut out = alloc_like(&dev, sfx, op.b * op.heads * hd)?;
    let (bi, nhi, nkvi, capi, hdi) = (int(op.b)?, int(op.heads)?, int(nkv)?, int(cap)?, int(hd)?);
    let window = int(op.window.unwrap_or(0))?;
    let stream = dev.cuda_stream();
    if wide.is_none() {
        let warps = 4u32;
        with_idx(&op.idx, |i| {
            let mut lb = stream.launch_builder(&f);
            push(&mut lb, &qa);
            push(&mut lb, &ka);
            push(&mut lb, &va);
            push_out(&mut lb, &mut out);
            lb.arg(i)
                .arg(&bi)
                .arg(&nhi)
                .arg(&nkvi)
                .arg(&capi)
                .arg(&hdi)
                .arg(&window)
                .arg(&op.scale);
            let cfg = LaunchConfig {
                grid_dim: (op.heads as u32, op.b as u32, 1),
                block_dim: (32 * warps, 1, 1),
                shared_mem_bytes: warps * hd as u32 * 4,
            };
            launch(name, &mut lb, cfg)
        })?;
    } else {
        // Split over the keys; with several splits each block leaves its partial result
        // (max, sum, accumulator), and the row's last block to finish merges them.
        let (splits, split_keys) = super::attention_splits(op.heads, op.b, cap);
        let parts = op.b * op.heads * splits;
        let scratch = |n: usize| -> Result<_> {
            // SAFETY: decode_attn64 writes every element it later reads (one per block).
            unsafe { dev.alloc::<f32>(n.max(1)) }
        };
        let (mut pm, mut pl, mut pa) = (scratch(parts)?, scratch(parts)?, scratch(parts * hd)?);
        let ski = int(split_keys)?;
        let counters = match &op.counters {
            _ if splits == 1 => None, // no block counts: the index view stands in
            Some(c) if c.elem_count() >= op.b * op.heads => Some(c),
            _ => candle_core::bail!(
                "decode attention: {splits} splits of {} rows x {} heads need a zeroed u32 counter buffer of that many elements",
                op.b,
                op.heads
            ),
        };
        let mut run = |c: Option<&CudaView<'_, u32>>| {
            with_idx(&op.idx, |i| {
                let mut lb = stream.launch_builder(&f);
                push(&mut lb, &qa);
                push(&mut lb, &ka);
                push(&mut lb, &va);
                push_out(&mut lb, &mut out);
                lb.arg(&mut pm).arg(&mut pl).arg(&mut pa);
                // The kernel counts its blocks in the counters (atomically) through this
                // view: scratch that only this kernel touches, in stream order, and
                // leaves zeroed.
                lb.arg(c.unwrap_or(i));
                lb.arg(i)
                    .arg(&bi)
                    .arg(&nhi)
                    .arg(&nkvi)
                    .arg(&capi)
                    .arg(&window)
                    .arg(&op.scale)
                    .arg(&ski);
                let cfg = LaunchConfig {
                    grid_dim: (op.heads as u32, op.b as u32, splits as u32),
                    block_dim: (128, 1, 1),
                    // Its shared memory is static.
                    shared_mem_bytes: 0,
                };
                launch(name, &mut lb, cfg)
            })
        };
        match counters {
            Some(t) => with_u32(t, "the attention counters", |c| run(Some(c)))?,
            None => run(None)?,
        }
    }
    Ok((
        CudaStorage {
            slice: out,
            device: dev,
        },
        Shape::from((op.b, op.heads * hd)),
    ))
}

pub(super) fn fused_gemv(
    op: &super::FusedGemv,
    (x, lx): (&CudaStorage, &Layout),
    (w, lw): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let (b, _) = lx.shape().dims2()?;
    let (n, k) = lw.shape().dims2()?;
    let dev = x.device.clone();
    let (sfx, xa) = view(&x.slice, lx, "x")?;
    let (_, wa) = view(&w.slice, lw, "w")?;
    let norm_t = match &op.prologue {
        super::Prologue::Norm(t) => Some(t.clone()),
        _ => None,
    };
    // The kernel reads x, w and the norm weights in 16-byte pieces.
    let vec = if sfx == "f32" { 4 } else { 8 };
    let norm_l = norm_t.as_ref().map(|t| t.layout().clone());
    for (what, l) in [
        ("x", Some(lx)),
        ("w", Some(lw)),
        ("norm weights", norm_l.as_ref()),
    ] {
        if l.is_some_and(|l| !l.start_offset().is_multiple_of(vec)) {
            candle_core::bail!("gemv: {what} does not start 16-byte aligned");
        }
    }
    let (ng, bg, rg) = (side(&norm_t), side(&op.bias), side(&op.res));
    let (na, ba, ra) = (
        side_arg(&ng, "norm weights")?,
        side_arg(&bg, "bias")?,
        side_arg(&rg, "residual")?,
    );
    let pro = prologue_code(&op.prologue);
    // `gemvfp_*`: the same kernel issuing the L2 prefetch (when the step plans one).
    let fam = if op.prefetch.is_empty() {
        "gemvf"
    } else {
        "gemvfp"
    };
    let name = kernel_name(&format!("{fam}_{sfx}_{b}_{pro}"))?;
    let f = function(&dev, name)?;
    let mut out = alloc_like(&dev, sfx, b * n)?;
    let smem = (b * k * (if sfx == "f32" { 4 } else { 2 })) as u32;
    if smem > 48 << 10 {
        f.set_attribute(
            candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            super::FUSED_SMEM_BYTES as i32,
        )
        .map_err(|e| err(name, e))?;
    }
    let (ni, ki) = (int(n)?, int(k)?);
    let null = 0u64;
    let stream = dev.cuda_stream();
    let mut lb = stream.launch_builder(&f);
    push(&mut lb, &xa);
    push_opt(&mut lb, &na, &null);
    lb.arg(&op.eps);
    push(&mut lb, &wa);
    push_opt(&mut lb, &ba, &null);
    push_opt(&mut lb, &ra, &null);
    push_out(&mut lb, &mut out);
    lb.arg(&ni).arg(&ki).arg(&op.prefetch);
    // One output row per warp. 8-warp blocks, but 16 behind the SwiGLU prologue: each
    // block recomputes silu(gate) · up over the whole input, so fewer blocks spend less
    // on it (H200, `gemv_bench.cu`, 1 row: Llama-1B down 15.06 -> 13.66 µs, Llama-8B
    // 38.25 -> 33.93, Qwen2-0.5B 8.39 -> 8.09; the other GEMVs are 1-3 % slower at 16).
    let warps = if matches!(op.prologue, super::Prologue::SiluMul) {
        16u32
    } else {
        8
    };
    let cfg = LaunchConfig {
        grid_dim: ((n as u32).div_ceil(warps), 1, 1),
        block_dim: (32 * warps, 1, 1),
        shared_mem_bytes: smem,
    };
    // SAFETY: the arguments match `gemvf_*` in decode.cu; `FusedGemv::takes` checked
    // rows, alignment and the shared memory; side tensors are [k], [n] and [b, n]; the
    // prefetch ranges (a hint: nothing is read into registers) lie in the model's own
    // weights or are empty.
    unsafe { lb.launch(cfg) }.map_err(|e| err(name, e))?;
    drop(lb);
    Ok((
        CudaStorage {
            slice: out,
            device: dev,
        },
        Shape::from((b, n)),
    ))
}

/// The GGML type id `cuda/qgemv.cuh` dispatches on.
pub(crate) fn ggml_id(t: candle_core::quantized::GgmlDType) -> Result<i32> {
    use candle_core::quantized::GgmlDType as G;
    Ok(match t {
        G::Q8_0 => 8,
        G::Q4K => 12,
        G::Q6K => 14,
        other => candle_core::bail!("quantized gemv: no kernel for {other:?}"),
    })
}

/// (address, GGML type, rows) of each of a quantized GEMV's weight matrices, in order;
/// absent ones (of the three a launch takes) have no rows.
pub(crate) fn quant_segments(
    qs: &[std::sync::Arc<candle_core::quantized::QTensor>],
) -> Result<[(u64, i32, i32); 3]> {
    if qs.len() > super::QuantGemv::MAX_SEGMENTS {
        candle_core::bail!("quantized gemv: {} segments", qs.len());
    }
    let mut segs = [(0u64, 0i32, 0i32); 3];
    for (slot, q) in segs.iter_mut().zip(qs) {
        *slot = (
            q.device_ptr()? as u64,
            ggml_id(q.dtype())?,
            int(q.shape().dims2()?.0)?,
        );
    }
    Ok(segs)
}

/// The launch of quantized GEMV kernel `f` (`name`) for `b` rows of `k` inputs over
/// `segs`: (blocks, warps a block, dynamic shared memory); as many blocks as the GPU runs
/// at once, or fewer (shared memory over 48 KiB is opted into first).
pub(crate) fn quant_gemv_shape(
    dev: &CudaDevice,
    f: &CudaFunction,
    name: &str,
    (b, k): (usize, usize),
    segs: &[(u64, i32, i32); 3],
) -> Result<(u32, u32, usize)> {
    use candle_core::cuda_backend::cudarc::driver::sys::{
        CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
    };
    let smem = super::QuantGemv::smem_bytes(b, k);
    if smem > 48 << 10 {
        f.set_attribute(
            CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            super::FUSED_SMEM_BYTES as i32,
        )
        .map_err(|e| err(name, e))?;
    }
    let warps = super::QuantGemv::warps(b) as u32;
    let sms = dev
        .cuda_stream()
        .context()
        .attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| err(name, e))?
        .max(1) as u32;
    let per_sm = f
        .occupancy_max_active_blocks_per_multiprocessor(32 * warps, smem, None)
        .map_err(|e| err(name, e))?
        .max(1);
    let blocks: u32 = segs
        .iter()
        .map(|s| (s.2 as u32).div_ceil(warps))
        .sum::<u32>()
        .clamp(1, sms * per_sm);
    Ok((blocks, warps, smem))
}

/// [`super::QuantGemv`]: one launch of `qgemvf_*` over up to three weight segments, with
/// as many blocks as the GPU runs at once (each computes the prologue once, then its
/// warps take rows across the segments).
pub(super) fn quant_gemv(
    op: &super::QuantGemv,
    (b, n, k): (usize, usize, usize),
    (x, lx): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let dev = x.device.clone();
    let (sfx, xa) = view(&x.slice, lx, "x")?;
    let norm_t = match &op.prologue {
        super::Prologue::Norm(t) => Some(t.clone()),
        _ => None,
    };
    let (ng, bg, rg) = (side(&norm_t), side(&op.bias), side(&op.res));
    let (na, ba, ra) = (
        side_arg(&ng, "norm weights")?,
        side_arg(&bg, "bias")?,
        side_arg(&rg, "residual")?,
    );
    let pro = prologue_code(&op.prologue);
    let segs = quant_segments(&op.segments)?;
    let fam = if op.prefetch.is_empty() {
        "qgemvf"
    } else {
        "qgemvfp"
    };
    let name = kernel_name(&format!("{fam}_{sfx}_{b}_{pro}"))?;
    let f = function(&dev, name)?;
    let (blocks, warps, smem) = quant_gemv_shape(&dev, &f, name, (b, k), &segs)?;
    let mut out = alloc_like(&dev, sfx, b * n)?;
    let (ldi, ki) = (int(n)?, int(k)?);
    let null = 0u64;
    let stream = dev.cuda_stream();
    let mut lb = stream.launch_builder(&f);
    push(&mut lb, &xa);
    push_opt(&mut lb, &na, &null);
    lb.arg(&op.eps);
    for s in &segs {
        lb.arg(&s.0).arg(&s.1).arg(&s.2);
    }
    push_opt(&mut lb, &ba, &null);
    push_opt(&mut lb, &ra, &null);
    push_out(&mut lb, &mut out);
    lb.arg(&ldi).arg(&ki).arg(&op.prefetch);
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (32 * warps, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    // SAFETY: the arguments match `qgemvf_*` in qgemv.cuh; `QuantGemv::takes` checked the
    // rows, types, widths and shared memory; the segment pointers are the quantized
    // tensors the operation holds (alive for the launch, and for as long as the model
    // keeps them, which a captured graph relies on); side tensors are [k], [n], [b, n];
    // the prefetch ranges lie in the model's own weights or are empty.
    unsafe { lb.launch(cfg) }.map_err(|e| err(name, e))?;
    drop(lb);
    Ok((
        CudaStorage {
            slice: out,
            device: dev,
        },
        Shape::from((b, n)),
    ))
}

/// [`super::RopeRows`] on CUDA: one launch of `rope_qkv_*` over every head of the step,
/// returning the queries and writing the keys and values into the caches.
pub(super) fn rope_qkv(
    op: &super::RopeRows,
    (qkv, l): (&CudaStorage, &Layout),
    (kc, lk): (&CudaStorage, &Layout),
    (vc, lv): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let whole = |lc: &Layout| lc.start_offset() == 0 && lc.is_contiguous();
    if !whole(lk) || !whole(lv) || lk.shape() != lv.shape() {
        candle_core::bail!("rope rows: the caches must be whole contiguous tensors of one shape");
    }
    let (_, nkv, cap, hd) = lk.shape().dims4()?;
    if nkv != op.kv_heads || hd != op.head_dim {
        candle_core::bail!(
            "rope rows: caches of {nkv} heads of {hd} for {} heads of {}",
            op.kv_heads,
            op.head_dim
        );
    }
    let dev = qkv.device.clone();
    let (sfx, qa) = view(&qkv.slice, l, "qkv")?;
    let (_, ka) = view(&kc.slice, lk, "the key cache")?;
    let (_, va) = view(&vc.slice, lv, "the value cache")?;
    let (cos_t, sin_t) = (Some(op.cos.clone()), Some(op.sin.clone()));
    let (cg, sg) = (side(&cos_t), side(&sin_t));
    let (qng, kng) = (side(&op.q_norm), side(&op.k_norm));
    let (ca, sa, qna, kna) = (
        side_arg(&cg, "RoPE cos")?,
        side_arg(&sg, "RoPE sin")?,
        side_arg(&qng, "q norm")?,
        side_arg(&kng, "k norm")?,
    );
    let (Some(ca), Some(sa)) = (ca, sa) else {
        candle_core::bail!("rope rows: no RoPE tables");
    };
    let name = kernel_name(&format!("rope_qkv_{sfx}"))?;
    let f = function(&dev, name)?;
    let mut q = alloc_like(&dev, sfx, op.b * op.heads * op.head_dim)?;
    let (bi, nhi, nkvi, capi, hdi) = (
        int(op.b)?,
        int(op.heads)?,
        int(op.kv_heads)?,
        int(cap)?,
        int(op.head_dim)?,
    );
    let null = 0u64;
    let stream = dev.cuda_stream();
    with_idx(&op.idx, |i| {
        let mut lb = stream.launch_builder(&f);
        push(&mut lb, &qa);
        push_opt(&mut lb, &qna, &null);
        push_opt(&mut lb, &kna, &null);
        lb.arg(&op.eps);
        push(&mut lb, &ca);
        push(&mut lb, &sa);
        push_out(&mut lb, &mut q);
        // The caches are written through these views: the step's own buffers, in
        // stream order (RopeRows::apply).
        push(&mut lb, &ka);
        push(&mut lb, &va);
        lb.arg(i).arg(&bi).arg(&nhi).arg(&nkvi).arg(&capi).arg(&hdi);
        let cfg = LaunchConfig {
            grid_dim: ((op.heads + 2 * op.kv_heads) as u32, op.b as u32, 1),
            block_dim: ((op.head_dim / 2) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        launch(name, &mut lb, cfg)
    })?;
    Ok((
        CudaStorage {
            slice: q,
            device: dev,
        },
        Shape::from((op.b, op.heads * op.head_dim)),
    ))
}

/// Two-stage argmax over the last dim of a contiguous `[rows, n]` tensor.
pub(super) struct ArgmaxRows;

impl candle_core::CustomOp1 for ArgmaxRows {
    fn name(&self) -> &'static str {
        "dayshift-argmax"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("dayshift-argmax runs on CUDA only")
    }

    fn cuda_fwd(&self, x: &CudaStorage, lx: &Layout) -> Result<(CudaStorage, Shape)> {
        let (rows, n) = lx.shape().dims2()?;
        let dev = x.device.clone();
        let (sfx, xa) = view(&x.slice, lx, "logits")?;
        let (name, f) = kernel(&dev, "argmax_part", sfx, "")?;
        let fin = function(&dev, kernel_name("argmax_final")?)?;
        let parts = 128usize.min(n.div_ceil(256)).max(1);
        // SAFETY: the first kernel writes every element before the second reads it,
        // and the second writes every element of `out`.
        let (mut pv, mut pi, mut out) = unsafe {
            (
                dev.alloc::<f32>(rows * parts)?,
                dev.alloc::<u32>(rows * parts)?,
                dev.alloc::<u32>(rows)?,
            )
        };
        let (ni, pn) = (int(n)?, int(parts)?);
        let stream = dev.cuda_stream();
        let mut lb = stream.launch_builder(&f);
        push(&mut lb, &xa);
        lb.arg(&mut pv).arg(&mut pi).arg(&ni).arg(&pn);
        let cfg = LaunchConfig {
            grid_dim: (parts as u32, rows as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch(name, &mut lb, cfg)?;
        let mut lb = stream.launch_builder(&fin);
        lb.arg(&pv).arg(&pi).arg(&mut out).arg(&pn);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        launch("argmax_final", &mut lb, cfg)?;
        Ok((
            CudaStorage {
                slice: S::U32(out),
                device: dev,
            },
            Shape::from(rows),
        ))
    }
}
