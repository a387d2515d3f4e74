//! The CUDA device as ScreenPilot opens it (one stream per thread, no multi-stream event
//! tracking). Every front end and benchmark opens GPUs through [`cuda_device`].

/// CUDA device `ordinal` as ScreenPilot uses it: all work on one stream per thread, so cudarc's
/// multi-stream bookkeeping (two CUDA events made and destroyed with every tensor) is turned
/// off; it costs host time on each of the step's ~290 allocations and buys nothing here.
pub fn cuda_device(ordinal: usize) -> candle_core::Result<candle_core::Device> {
    let dev = candle_core::Device::new_cuda(ordinal)?;
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(d) = &dev {
        // SAFETY: no tensor exists on this device yet, and ScreenPilot never creates a second
        // stream, which is when cudarc's events would order work between streams.
        unsafe { d.disable_event_tracking() };
    }
    Ok(dev)
}
