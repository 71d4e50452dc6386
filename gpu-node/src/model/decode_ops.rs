//! The two operations of a decode step that take the step's indices from device memory
//! instead of from the host: the write of the new keys and values into the padded KV
//! cache ([`KvWrite`]) and decode attention over each sequence's own length
//! ([`DecodeAttention`]). With every per-step value in one device buffer (`idx`: token
//! ids, positions and slots of the `b` rows, `[3 * b]` u32), a decode step has the same
//! shapes and pointers at every step of a batch bucket, so it can be captured once as a
//! CUDA graph and replayed (`cuda_graph.rs`).
//!
//! On CUDA they run our kernels (`gpu-node/cuda/decode.cu`, compiled by `build.rs` into a
//! fatbin: no JIT on the GPUs providers rent); on the CPU the same arithmetic in Rust,
//! which is what the CPU tests compare against the eager path.

use candle_core::{CpuStorage, CustomOp3, DType, InplaceOp3, Layout, Result, Shape, Tensor};

/// The slot of a padding row (a batch filled up to its bucket): it writes nothing and
/// attends to nothing (its output is zeros).
pub const PAD_SLOT: u32 = u32::MAX;

/// Row `r`'s position and slot in the `[3 * b]` index buffer of a step (`None`: padding).
fn row(idx: &[u32], b: usize, r: usize) -> Option<(usize, usize)> {
    let slot = idx[2 * b + r];
    (slot != PAD_SLOT).then_some((idx[b + r] as usize, slot as usize))
}

/// The contiguous part of a CPU storage a layout addresses, or an error naming `what`.
fn contiguous<'a, T>(v: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, z)) => Ok(&v[a..z]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// The step's index buffer on the host.
fn host_idx(idx: &Tensor, b: usize) -> Result<Vec<u32>> {
    let v = idx.to_device(&candle_core::Device::Cpu)?.to_vec1::<u32>()?;
    if v.len() != 3 * b {
        candle_core::bail!("decode index buffer has {} entries, not 3 x {b}", v.len());
    }
    Ok(v)
}

/// Writes a step's keys (or values) `[b, kv_heads, head_dim]` into the cache
/// `[slots, kv_heads, cap, head_dim]` at each row's slot and position (applied in place
/// to the cache, with `(src, idx)` as operands).
pub struct KvWrite {
    /// Rows of the step.
    pub b: usize,
}

impl KvWrite {
    fn dims(&self, cache: &Layout, src: &Layout) -> Result<(usize, usize, usize)> {
        let (_, nkv, cap, hd) = cache.shape().dims4()?;
        if src.shape().elem_count() != self.b * nkv * hd {
            candle_core::bail!(
                "kv write: source {:?} is not [{}, {nkv}, {hd}]",
                src.shape(),
                self.b
            );
        }
        Ok((nkv, cap, hd))
    }
}

fn write_rows<T: Copy>(
    cache: &mut [T],
    src: &[T],
    idx: &[u32],
    b: usize,
    (nkv, cap, hd): (usize, usize, usize),
) -> Result<()> {
    for r in 0..b {
        let Some((pos, slot)) = row(idx, b, r) else {
            continue;
        };
        if pos >= cap {
            continue;
        }
        for h in 0..nkv {
            let dst = ((slot * nkv + h) * cap + pos) * hd;
            let s = (r * nkv + h) * hd;
            let Some(d) = cache.get_mut(dst..dst + hd) else {
                candle_core::bail!("kv write: slot {slot} is outside the cache");
            };
            d.copy_from_slice(&src[s..s + hd]);
        }
    }
    Ok(())
}

impl InplaceOp3 for KvWrite {
    fn name(&self) -> &'static str {
        "dayshift-kv-write"
    }

    fn cpu_fwd(
        &self,
        cache: &mut CpuStorage,
        lc: &Layout,
        src: &CpuStorage,
        ls: &Layout,
        idx: &CpuStorage,
        li: &Layout,
    ) -> Result<()> {
        let dims = self.dims(lc, ls)?;
        if lc.start_offset() != 0 || !lc.is_contiguous() {
            candle_core::bail!("kv write: the cache must be a whole contiguous tensor");
        }
        let CpuStorage::U32(idx) = idx else {
            candle_core::bail!("kv write: the index buffer must be u32");
        };
        let idx = contiguous(idx, li, "the index buffer")?;
        match (cache, src) {
            (CpuStorage::F32(c), CpuStorage::F32(s)) => {
                write_rows(c, contiguous(s, ls, "keys")?, idx, self.b, dims)
            }
            (CpuStorage::BF16(c), CpuStorage::BF16(s)) => {
                write_rows(c, contiguous(s, ls, "keys")?, idx, self.b, dims)
            }
            (CpuStorage::F16(c), CpuStorage::F16(s)) => {
                write_rows(c, contiguous(s, ls, "keys")?, idx, self.b, dims)
            }
            _ => candle_core::bail!("kv write: cache and source must share a float dtype"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        cache: &mut candle_core::cuda_backend::CudaStorage,
        lc: &Layout,
        src: &candle_core::cuda_backend::CudaStorage,
        ls: &Layout,
        idx: &candle_core::cuda_backend::CudaStorage,
        li: &Layout,
    ) -> Result<()> {
        let dims = self.dims(lc, ls)?;
        cuda::kv_write(self.b, dims, cache, lc, src, ls, idx, li)
    }
}

/// Decode attention of `b` single-token rows over the padded cache: row `r`'s query
/// (`[b, heads, head_dim]`) attends to keys `0..=pos[r]` of its slot (or the last
/// `window` of them); the result is `[b, heads * head_dim]` in the query's dtype. Applied
/// to `(q, k_cache, v_cache)`; the index buffer rides along.
pub struct DecodeAttention {
    /// Rows of the step.
    pub b: usize,
    /// Query heads.
    pub heads: usize,
    /// Sliding window in keys (`None`: all keys).
    pub window: Option<usize>,
    /// Score scale.
    pub scale: f32,
    /// The step's `[3 * b]` index buffer (ids, positions, slots).
    pub idx: Tensor,
}

impl DecodeAttention {
    fn dims(&self, q: &Layout, k: &Layout) -> Result<(usize, usize, usize)> {
        let (_, nkv, cap, hd) = k.shape().dims4()?;
        if q.shape().elem_count() != self.b * self.heads * hd
            || nkv == 0
            || !self.heads.is_multiple_of(nkv)
        {
            candle_core::bail!(
                "decode attention: query {:?} does not match {} rows of {} heads over {nkv} kv heads of {hd}",
                q.shape(),
                self.b,
                self.heads
            );
        }
        Ok((nkv, cap, hd))
    }

    /// The CPU arithmetic (f32 accumulation, like the kernel).
    fn attend<T: candle_core::WithDType>(
        &self,
        q: &[T],
        kc: &[T],
        vc: &[T],
        idx: &[u32],
        (nkv, cap, hd): (usize, usize, usize),
    ) -> Vec<T> {
        let (b, nh) = (self.b, self.heads);
        let rep = nh / nkv;
        let mut out = vec![T::zero(); b * nh * hd];
        let mut scores = Vec::new();
        for r in 0..b {
            let Some((pos, slot)) = row(idx, b, r) else {
                continue; // padding: zeros
            };
            let len = (pos + 1).min(cap);
            let start = self.window.map_or(0, |w| len.saturating_sub(w));
            for h in 0..nh {
                let base = (slot * nkv + h / rep) * cap * hd;
                let qr: Vec<f32> = q[(r * nh + h) * hd..][..hd]
                    .iter()
                    .map(|x| x.to_f64() as f32 * self.scale)
                    .collect();
                scores.clear();
                for j in start..len {
                    let k = &kc[base + j * hd..][..hd];
                    scores.push(
                        qr.iter()
                            .zip(k)
                            .map(|(a, b)| a * b.to_f64() as f32)
                            .sum::<f32>(),
                    );
                }
                let mx = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut total = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - mx).exp();
                    total += *s;
                }
                let o = &mut out[(r * nh + h) * hd..][..hd];
                for (d, od) in o.iter_mut().enumerate() {
                    let v: f32 = scores
                        .iter()
                        .enumerate()
                        .map(|(i, p)| p * vc[base + (start + i) * hd + d].to_f64() as f32)
                        .sum();
                    *od = T::from_f64((v / total) as f64);
                }
            }
        }
        out
    }
}

impl CustomOp3 for DecodeAttention {
    fn name(&self) -> &'static str {
        "dayshift-decode-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        lq: &Layout,
        k: &CpuStorage,
        lk: &Layout,
        v: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims(lq, lk)?;
        let idx = host_idx(&self.idx, self.b)?;
        let shape = Shape::from((self.b, self.heads * dims.2));
        let out = match (q, k, v) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                CpuStorage::F32(self.attend(
                    contiguous(q, lq, "the query")?,
                    contiguous(k, lk, "the key cache")?,
                    contiguous(v, lv, "the value cache")?,
                    &idx,
                    dims,
                ))
            }
            (CpuStorage::BF16(q), CpuStorage::BF16(k), CpuStorage::BF16(v)) => {
                CpuStorage::BF16(self.attend(
                    contiguous(q, lq, "the query")?,
                    contiguous(k, lk, "the key cache")?,
                    contiguous(v, lv, "the value cache")?,
                    &idx,
                    dims,
                ))
            }
            (CpuStorage::F16(q), CpuStorage::F16(k), CpuStorage::F16(v)) => {
                CpuStorage::F16(self.attend(
                    contiguous(q, lq, "the query")?,
                    contiguous(k, lk, "the key cache")?,
                    contiguous(v, lv, "the value cache")?,
                    &idx,
                    dims,
                ))
            }
            _ => candle_core::bail!("decode attention: query and caches must share a float dtype"),
        };
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::cuda_backend::CudaStorage,
        lq: &Layout,
        k: &candle_core::cuda_backend::CudaStorage,
        lk: &Layout,
        v: &candle_core::cuda_backend::CudaStorage,
        lv: &Layout,
    ) -> Result<(candle_core::cuda_backend::CudaStorage, Shape)> {
        let dims = self.dims(lq, lk)?;
        cuda::decode_attention(self, dims, (q, lq), (k, lk), (v, lv))
    }
}

/// Whether the decode kernels handle a model of this head size and dtype (the kernel keeps
/// up to 8 dimensions per lane).
pub fn supported(head_dim: usize, dtype: DType) -> bool {
    head_dim <= 256 && matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::DecodeAttention;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaFunction, CudaModule, CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
    use candle_core::cuda_backend::{CudaDevice, CudaStorage, CudaStorageSlice as S, DeviceId};
    use candle_core::{Layout, Result, Shape, Storage};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    /// The fatbin `build.rs` made from `cuda/decode.cu`.
    static FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/decode.fatbin"));

    type Functions = HashMap<(DeviceId, &'static str), CudaFunction>;

    fn err(what: &str, e: impl std::fmt::Display) -> candle_core::Error {
        candle_core::Error::Msg(format!("{what}: {e}"))
    }

    /// The kernel `name` on `dev`, loaded from the fatbin once per device.
    fn function(dev: &CudaDevice, name: &'static str) -> Result<CudaFunction> {
        static MODULES: OnceLock<Mutex<(HashMap<DeviceId, Arc<CudaModule>>, Functions)>> =
            OnceLock::new();
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

    fn contiguous_start(l: &Layout, what: &str) -> Result<usize> {
        match l.contiguous_offsets() {
            Some((a, _)) => Ok(a),
            None => candle_core::bail!("{what} must be contiguous"),
        }
    }

    fn int(x: usize) -> Result<i32> {
        i32::try_from(x).map_err(|_| err("decode kernels", format!("{x} exceeds i32")))
    }

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
        fn run<T: DeviceRepr>(
            dev: &CudaDevice,
            name: &'static str,
            b: usize,
            (nkv, cap, hd): (usize, usize, usize),
            c: &mut CudaSlice<T>,
            s: &CudaSlice<T>,
            ls: &Layout,
            i: &CudaView<'_, u32>,
        ) -> Result<()> {
            let f = function(dev, name)?;
            let s = s.slice(contiguous_start(ls, "keys")?..);
            let n = b * nkv * hd;
            let threads = 256u32;
            let blocks = n.div_ceil(threads as usize).max(1) as u32;
            let (bi, nkvi, capi, hdi) = (int(b)?, int(nkv)?, int(cap)?, int(hd)?);
            let stream = dev.cuda_stream();
            let mut lb = stream.launch_builder(&f);
            lb.arg(&s)
                .arg(c)
                .arg(i)
                .arg(&bi)
                .arg(&nkvi)
                .arg(&capi)
                .arg(&hdi);
            let cfg = LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the argument list matches `kv_write_*` in decode.cu; the cache is a
            // whole contiguous [slots, nkv, cap, hd] tensor and every slot index the host
            // put in `idx` is below `slots` or PAD_SLOT (checked by the caller).
            unsafe { lb.launch(cfg) }.map_err(|e| err(name, e))?;
            Ok(())
        }
        if lc.start_offset() != 0 || !lc.is_contiguous() {
            candle_core::bail!("kv write: the cache must be a whole contiguous tensor");
        }
        let dims = (nkv, cap, hd);
        let dev = cache.device.clone();
        let i = idx
            .as_cuda_slice::<u32>()?
            .slice(contiguous_start(li, "the index buffer")?..);
        match (&mut cache.slice, &src.slice) {
            (S::F32(c), S::F32(s)) => run(&dev, "kv_write_f32", b, dims, c, s, ls, &i),
            (S::F16(c), S::F16(s)) => run(&dev, "kv_write_f16", b, dims, c, s, ls, &i),
            (S::BF16(c), S::BF16(s)) => run(&dev, "kv_write_bf16", b, dims, c, s, ls, &i),
            _ => candle_core::bail!("kv write: cache and keys must share a float dtype"),
        }
    }

    pub(super) fn decode_attention(
        op: &DecodeAttention,
        (nkv, cap, hd): (usize, usize, usize),
        (q, lq): (&CudaStorage, &Layout),
        (k, lk): (&CudaStorage, &Layout),
        (v, lv): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        #[allow(clippy::too_many_arguments)]
        fn run<T: DeviceRepr>(
            dev: &CudaDevice,
            name: &'static str,
            op: &DecodeAttention,
            (nkv, cap, hd): (usize, usize, usize),
            qs: CudaView<'_, T>,
            ks: CudaView<'_, T>,
            vs: CudaView<'_, T>,
            i: &CudaView<'_, u32>,
        ) -> Result<CudaSlice<T>> {
            let f = function(dev, name)?;
            let n = op.b * op.heads * hd;
            // SAFETY: every element is written by the kernel before it is read.
            let mut out = unsafe { dev.alloc::<T>(n) }?;
            let warps = 4u32;
            let (bi, nhi, nkvi, capi, hdi) =
                (int(op.b)?, int(op.heads)?, int(nkv)?, int(cap)?, int(hd)?);
            let window = int(op.window.unwrap_or(0))?;
            let scale = op.scale;
            let stream = dev.cuda_stream();
            let mut lb = stream.launch_builder(&f);
            lb.arg(&qs)
                .arg(&ks)
                .arg(&vs)
                .arg(&mut out)
                .arg(i)
                .arg(&bi)
                .arg(&nhi)
                .arg(&nkvi)
                .arg(&capi)
                .arg(&hdi)
                .arg(&window)
                .arg(&scale);
            let cfg = LaunchConfig {
                grid_dim: (op.heads as u32, op.b as u32, 1),
                block_dim: (32 * warps, 1, 1),
                shared_mem_bytes: warps * hd as u32 * 4,
            };
            // SAFETY: the argument list matches `decode_attn_*` in decode.cu; shapes were
            // checked by `DecodeAttention::dims`; head_dim <= 256 (`supported`).
            unsafe { lb.launch(cfg) }.map_err(|e| err(name, e))?;
            Ok(out)
        }
        let dev = q.device.clone();
        let (istore, il) = op.idx.storage_and_layout();
        let Storage::Cuda(istore) = &*istore else {
            candle_core::bail!("decode attention: the index buffer is not on the GPU");
        };
        let i = istore
            .as_cuda_slice::<u32>()?
            .slice(contiguous_start(il, "the index buffer")?..);
        let (oq, ok, ov) = (
            contiguous_start(lq, "the query")?,
            contiguous_start(lk, "the key cache")?,
            contiguous_start(lv, "the value cache")?,
        );
        let dims = (nkv, cap, hd);
        let slice = match (&q.slice, &k.slice, &v.slice) {
            (S::F32(q), S::F32(k), S::F32(v)) => S::F32(run(
                &dev,
                "decode_attn_f32",
                op,
                dims,
                q.slice(oq..),
                k.slice(ok..),
                v.slice(ov..),
                &i,
            )?),
            (S::F16(q), S::F16(k), S::F16(v)) => S::F16(run(
                &dev,
                "decode_attn_f16",
                op,
                dims,
                q.slice(oq..),
                k.slice(ok..),
                v.slice(ov..),
                &i,
            )?),
            (S::BF16(q), S::BF16(k), S::BF16(v)) => S::BF16(run(
                &dev,
                "decode_attn_bf16",
                op,
                dims,
                q.slice(oq..),
                k.slice(ok..),
                v.slice(ov..),
                &i,
            )?),
            _ => candle_core::bail!("decode attention: query and caches must share a float dtype"),
        };
        Ok((
            CudaStorage { slice, device: dev },
            Shape::from((op.b, op.heads * hd)),
        ))
    }
}
