//! Choosing the compute device and reading its facts (name, memory, compute capability).

use candle_core::Device;
use dayshift_config::protocol::GpuFacts;

/// The chosen device with its facts.
pub struct DeviceInfo {
    /// candle device.
    pub device: Device,
    /// What registration reports.
    pub facts: GpuFacts,
}

/// Fixes the CPU thread count for the process: when `RAYON_NUM_THREADS` is unset, sets it
/// to candle's own default (the CPUs this process may run on). candle asks for the count
/// on every CPU matmul, and unset, it re-reads `/proc/cpuinfo` each time: ~60 times a
/// SmolLM2 decode step (`strace`; `examples/decode_speed.rs` 11.8 → 8.9 ms a token).
/// rayon's own global pool keeps its default size (every logical CPU; the variable would
/// otherwise shrink it to candle's count on SMT machines): it is built here, explicitly.
///
/// # Safety
/// Call before any other thread of the process starts (it writes the environment).
pub unsafe fn pin_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        let logical = std::thread::available_parallelism().map_or(1, |l| l.get());
        // SAFETY: the caller's contract: no other thread reads the environment yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
        // (an error means a global pool exists already, whose size stays)
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(logical)
            .build_global();
    }
}

/// Keeps the heap memory the process frees for its next allocations (glibc): blocks up
/// to 32 MiB come from the heap, not from a fresh `mmap` each, and freed heap is not
/// given back to the system. A CPU prompt chunk allocates and frees tens of MB per layer
/// (activations, attention scores), and every fresh page faulted: ~7 % of a long
/// prompt's samples in page faults and their locks (`perf`, Qwen3-0.6B shape).
/// `examples/prefill_speed.rs` (`ALLOC=glibc` skips this call), three A/B pairs on the
/// 2-core dev machine: Qwen3-0.6B shape Q4_K_M, 1,024 tokens in 256-token chunks, 5.41–5.61
/// s against 5.91–6.11 with glibc's defaults (first runs 6.15–6.46 against 6.41–7.03);
/// SmolLM2 Q4_1, 2,048 tokens, no difference (6.42–7.16 s against 6.33–7.26). Memory the
/// process once used stays reserved for it, as a GPU node's CUDA memory pool already does.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's thresholds; any thread may call it.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Host memory (total, available) in bytes from `/proc/meminfo`; zeros when unreadable.
pub fn host_memory() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else {
        return (0, 0);
    };
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

fn cpu_info() -> DeviceInfo {
    let (total, free) = host_memory();
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "cpu".into());
    DeviceInfo {
        device: Device::Cpu,
        facts: GpuFacts {
            index: 0,
            backend: "cpu".into(),
            name,
            memory_total_bytes: total,
            memory_free_bytes: free,
            compute_capability: None,
        },
    }
}

/// Picks the device named in the engine config (`auto`, `cpu`, `cuda`, `cuda:N`).
pub fn select(spec: &str) -> anyhow::Result<DeviceInfo> {
    let cuda_index = match spec {
        "cpu" => return Ok(cpu_info()),
        "auto" => {
            if cfg!(feature = "cuda") && cuda::present() {
                Some(0)
            } else {
                return Ok(cpu_info());
            }
        }
        "cuda" => Some(0),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok()),
    };
    match cuda_index {
        Some(i) => cuda::open(i),
        None => anyhow::bail!("device {spec:?} is not one of auto, cpu, cuda, cuda:N"),
    }
}

/// Free memory on the device now (host memory for the CPU).
pub fn free_memory(info: &DeviceInfo) -> u64 {
    match info.facts.backend.as_str() {
        "cuda" => cuda::free(info.facts.index as usize).unwrap_or(info.facts.memory_free_bytes),
        _ => host_memory().1,
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::DeviceInfo;
    use candle_core::Device;
    use cudarc::driver::result;
    use dayshift_config::protocol::GpuFacts;

    /// candle links libcuda dynamically (cudarc `dynamic-linking`): a CUDA build only
    /// starts where the driver is installed, so the library is present once we run
    /// (whether a GPU answers is found out by `open`).
    pub fn present() -> bool {
        true
    }

    pub fn open(i: usize) -> anyhow::Result<DeviceInfo> {
        let device = Device::new_cuda(i).map_err(|e| {
            anyhow::anyhow!(
                "no usable NVIDIA GPU cuda:{i}: {e} (check that `nvidia-smi` lists the GPU; \
                 this node needs NVIDIA driver 580 or newer)"
            )
        })?;
        if let Device::Cuda(d) = &device {
            // cudarc records and waits on two CUDA events per buffer for cross-stream
            // safety (candle runs on its own stream, which turns that on): several
            // driver calls per operation, the largest host cost of a decode step. The
            // node issues all its work on this one stream, so the tracking is not needed.
            // SAFETY: every tensor of this device is used on candle's single stream.
            unsafe { d.disable_event_tracking() };
        }
        result::init()?;
        let dev = result::device::get(i as i32)?;
        keep_pool_memory(dev);
        let name = result::device::get_name(dev)?;
        let total = unsafe { result::device::total_mem(dev)? } as u64;
        use cudarc::driver::sys::CUdevice_attribute as A;
        let major = unsafe {
            result::device::get_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?
        };
        let minor = unsafe {
            result::device::get_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?
        };
        let free = free(i).unwrap_or(0);
        Ok(DeviceInfo {
            device,
            facts: GpuFacts {
                index: i as u32,
                backend: "cuda".into(),
                name,
                memory_total_bytes: total,
                memory_free_bytes: free,
                compute_capability: Some(format!("{major}.{minor}")),
            },
        })
    }

    /// candle allocates with `cuMemAllocAsync` from the device's default memory pool,
    /// whose release threshold of 0 hands all free memory back to the driver at every
    /// synchronisation, i.e. once per engine step; the next step then maps it again.
    /// A threshold of "never" keeps it in the pool (like PyTorch's caching allocator).
    fn keep_pool_memory(dev: cudarc::driver::sys::CUdevice) {
        use cudarc::driver::sys;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: plain driver calls with valid out-pointers; the context is current.
        let r = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, dev) };
        if r != sys::CUresult::CUDA_SUCCESS {
            tracing::warn!("no default CUDA memory pool ({r:?}): allocations stay slow");
            return;
        }
        let mut threshold = u64::MAX;
        let r = unsafe {
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold as *mut u64).cast(),
            )
        };
        if r != sys::CUresult::CUDA_SUCCESS {
            tracing::warn!("cannot set the CUDA memory pool's release threshold ({r:?})");
        }
    }

    pub fn free(i: usize) -> Option<u64> {
        // Needs a current context: candle's device made one for this thread's primary ctx.
        let dev = result::device::get(i as i32).ok()?;
        let ctx = unsafe { result::primary_ctx::retain(dev).ok()? };
        unsafe { result::ctx::set_current(ctx).ok()? };
        result::mem_get_info().ok().map(|(f, _)| f as u64)
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::DeviceInfo;

    pub fn present() -> bool {
        false
    }
    pub fn open(i: usize) -> anyhow::Result<DeviceInfo> {
        anyhow::bail!(
            "device cuda:{i} asked for, but this dayshift-node was built without the `cuda` feature: rebuild with --features cuda or use device = \"cpu\""
        )
    }
    pub fn free(_i: usize) -> Option<u64> {
        None
    }
}
