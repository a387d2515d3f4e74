//! The FFmpeg side of [`super`]: our own I/O callbacks over a file or bytes, the allowed
//! demuxers and decoders, the stream's frame count and rate, and decoding in order keeping only
//! the sampled frames. Built with the `video-files` feature (on by default).

use std::sync::{Arc, Once};
use std::time::Instant;

use ffmpeg_next as ff;
use ff::codec::Id;
use ff::format::context::{Input, StreamIo};
use image::{DynamicImage, RgbImage};
use screenpilot_model::preprocess::VideoConfig;

use super::{invalid, Source, VideoLimits};
use crate::error::Result;
use crate::request::Clip;

/// The demuxers FFmpeg may pick (its names): mp4/mov, Matroska/WebM, AVI.
const DEMUXERS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi";
/// The decoders FFmpeg may open while probing the streams.
const DECODERS: &str = "h264,hevc,vp8,vp9,libdav1d,libaom-av1,av1,mpeg4,mjpeg";
/// Consecutive unreadable packets skipped before the file is called corrupt.
const MAX_BAD_PACKETS: usize = 1000;

/// FFmpeg writes its own diagnostics to stderr; our callers get one error value instead.
fn quiet_ffmpeg() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| ff::util::log::set_level(ff::util::log::Level::Quiet));
}

fn open_input(src: &Source, limits: &VideoLimits, deadline: Option<Instant>) -> std::result::Result<Input, String> {
    let reader = src.reader(limits.max_file_bytes).map_err(|e| format!("cannot read it: {e}"))?;
    let io = StreamIo::from_read_seek(reader).map_err(|e| format!("cannot read it: {e}"))?;
    let mut options = ff::Dictionary::new();
    options.set("format_whitelist", DEMUXERS);
    options.set("codec_whitelist", DECODERS);
    // No protocol at all: every byte comes through `io`.
    options.set("protocol_whitelist", "none");
    let expired = move || deadline.is_some_and(|d| Instant::now() >= d);
    // Unrecognised data, a container off the list and a cut-off header all fail here, with
    // FFmpeg's codes varying between them: one message covers them.
    ff::format::input_from_stream_with_interrupt(io, None, Some(options), expired).map_err(|_| {
        if expired() {
            "reading it took too long".to_string()
        } else {
            "not a video in a supported container (mp4, mov, webm, mkv or avi), or truncated or corrupt".to_string()
        }
    })
}

/// What the container says about its video stream.
struct StreamInfo {
    index: usize,
    frames: usize,
    fps: Option<f64>,
    parameters: ff::codec::Parameters,
}

fn video_stream(input: &Input) -> std::result::Result<StreamInfo, String> {
    let stream = input.streams().best(ff::media::Type::Video).ok_or("it has no video stream")?;
    let rate = |r: ff::Rational| (r.denominator() != 0).then(|| f64::from(r)).filter(|f| f.is_finite() && *f > 0.0);
    Ok(StreamInfo {
        index: stream.index(),
        frames: usize::try_from(stream.frames()).unwrap_or(0),
        fps: rate(stream.avg_frame_rate()).or_else(|| rate(stream.rate())),
        parameters: stream.parameters(),
    })
}

fn check_codec(id: Id) -> std::result::Result<(), String> {
    match id {
        Id::H264 | Id::HEVC | Id::VP8 | Id::VP9 | Id::AV1 | Id::MPEG4 | Id::MJPEG => Ok(()),
        other => Err(format!(
            "its video codec ({}) is not supported (H.264, H.265, VP8, VP9, AV1 or MPEG-4)",
            format!("{other:?}").to_lowercase()
        )),
    }
}

pub(super) fn decode(src: &Source, name: &str, cfg: &VideoConfig, limits: &VideoLimits, deadline: Option<Instant>) -> Result<Arc<Clip>> {
    quiet_ffmpeg();
    let fail = |m: String| invalid(name, m);
    let mut input = open_input(src, limits, deadline).map_err(fail)?;
    let info = video_stream(&input).map_err(fail)?;
    check_codec(info.parameters.id()).map_err(fail)?;
    // WebM and Matroska do not record the count: count the stream's packets (no decoding), as
    // an exact scan of the file does.
    let total = if info.frames > 0 {
        info.frames
    } else {
        let n = count_packets(&mut input, info.index, limits, deadline).map_err(fail)?;
        input = open_input(src, limits, deadline).map_err(fail)?;
        n
    };
    if total == 0 {
        return Err(fail("its video stream has no frames".into()));
    }
    if total > limits.max_frames {
        return Err(fail(format!("it has {total} frames, more than the {} a video may have", limits.max_frames)));
    }
    let indices = cfg.sample_frames(total, info.fps);
    let frames = Decoder::new(&info, indices.clone(), limits, deadline).and_then(|d| d.run(&mut input)).map_err(fail)?;
    Ok(Arc::new(Clip { frames, indices, fps: info.fps }))
}

/// Reads the next packet; `None` at the end. Corrupt packets are skipped, a few at most.
fn next_packet(input: &mut Input, deadline: Option<Instant>) -> std::result::Result<Option<ff::Packet>, String> {
    let mut bad = 0;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err("reading it took too long".into());
        }
        let mut packet = ff::Packet::empty();
        match packet.read(input) {
            Ok(()) => return Ok(Some(packet)),
            Err(ff::Error::Eof) => return Ok(None),
            Err(ff::Error::InvalidData) if bad < MAX_BAD_PACKETS => bad += 1,
            Err(ff::Error::Exit) => return Err("reading it took too long".into()),
            Err(e) => return Err(format!("it is corrupt or truncated ({e})")),
        }
    }
}

fn count_packets(input: &mut Input, index: usize, limits: &VideoLimits, deadline: Option<Instant>) -> std::result::Result<usize, String> {
    let mut n = 0usize;
    while let Some(p) = next_packet(input, deadline)? {
        if p.stream() == index {
            n += 1;
            if n > limits.max_frames {
                return Err(format!("it has more than the {} frames a video may have", limits.max_frames));
            }
        }
    }
    Ok(n)
}

/// Decodes a stream in order, converting and keeping the frames at `wanted` (ascending).
struct Decoder<'a> {
    codec: ff::decoder::Video,
    index: usize,
    wanted: Vec<usize>,
    limits: &'a VideoLimits,
    deadline: Option<Instant>,
    scaler: Option<ff::software::scaling::Context>,
    kept: Vec<Arc<DynamicImage>>,
    kept_bytes: u64,
    /// Frames decoded so far (the index of the next one).
    seen: usize,
}

impl<'a> Decoder<'a> {
    fn new(info: &StreamInfo, wanted: Vec<usize>, limits: &'a VideoLimits, deadline: Option<Instant>) -> std::result::Result<Self, String> {
        let ctx = ff::codec::Context::from_parameters(info.parameters.clone())
            .map_err(|e| format!("cannot set up its decoder: {e}"))?;
        let codec = ctx.decoder().video().map_err(|e| format!("no decoder for its video codec in this FFmpeg ({e})"))?;
        let (w, h) = (codec.width(), codec.height());
        if w > 0 && h > 0 {
            check_frame(w, h, limits)?;
            let bytes = u64::from(w) * u64::from(h) * 3 * wanted.len() as u64;
            if bytes > limits.max_clip_bytes {
                return Err(format!(
                    "its {} sampled frames of {w}x{h} would take {bytes} bytes, over the limit of {}",
                    wanted.len(),
                    limits.max_clip_bytes
                ));
            }
        }
        Ok(Self { codec, index: info.index, wanted, limits, deadline, scaler: None, kept: Vec::new(), kept_bytes: 0, seen: 0 })
    }

    fn done(&self) -> bool {
        self.kept.len() == self.wanted.len()
    }

    fn run(mut self, input: &mut Input) -> std::result::Result<Vec<Arc<DynamicImage>>, String> {
        while !self.done() {
            let Some(packet) = next_packet(input, self.deadline)? else { break };
            if packet.stream() != self.index {
                continue;
            }
            // A packet the decoder refuses is skipped, like a corrupt one; the frames that come
            // out are what is counted.
            if self.codec.send_packet(&packet).is_ok() {
                self.drain()?;
            }
        }
        if !self.done() {
            // Frames still inside the decoder (reordering delay).
            let _ = self.codec.send_eof();
            self.drain()?;
        }
        if !self.done() {
            return Err(format!(
                "it ends after {} frames, before frame {} (truncated or corrupt)",
                self.seen,
                self.wanted[self.kept.len()]
            ));
        }
        Ok(self.kept)
    }

    fn drain(&mut self) -> std::result::Result<(), String> {
        let mut frame = ff::frame::Video::empty();
        while !self.done() && self.codec.receive_frame(&mut frame).is_ok() {
            if self.seen > self.limits.max_frames {
                return Err(format!("it has more than the {} frames a video may have", self.limits.max_frames));
            }
            // Indices are ascending; a repeated index keeps the same frame again.
            while !self.done() && self.wanted[self.kept.len()] == self.seen {
                let rgb = Arc::new(self.convert_frame(&frame)?);
                self.kept.push(rgb);
            }
            self.seen += 1;
        }
        Ok(())
    }

    fn convert_frame(&mut self, frame: &ff::frame::Video) -> std::result::Result<DynamicImage, String> {
        let (w, h) = (frame.width(), frame.height());
        check_frame(w, h, self.limits)?;
        self.kept_bytes += u64::from(w) * u64::from(h) * 3;
        if self.kept_bytes > self.limits.max_clip_bytes {
            return Err(format!("its sampled frames take over the limit of {} bytes", self.limits.max_clip_bytes));
        }
        let stale = self.scaler.as_ref().is_none_or(|s| {
            let i = s.input();
            (i.format, i.width, i.height) != (frame.format(), w, h)
        });
        if stale {
            let s = ff::software::scaling::Context::get(
                frame.format(),
                w,
                h,
                ff::format::Pixel::RGB24,
                w,
                h,
                ff::software::scaling::Flags::BILINEAR,
            )
            .map_err(|e| format!("cannot convert its frames to RGB: {e}"))?;
            self.scaler = Some(s);
        }
        let mut out = ff::frame::Video::empty();
        let scaler = self.scaler.as_mut().ok_or("no converter")?;
        scaler.run(frame, &mut out).map_err(|e| format!("cannot convert frame {} to RGB: {e}", self.seen))?;
        // Rows of `out` are `stride` bytes apart, of which `3 * w` are pixels.
        let (stride, row) = (out.stride(0), 3 * w as usize);
        let data = out.data(0);
        let mut rgb = Vec::with_capacity(row * h as usize);
        for y in 0..h as usize {
            rgb.extend_from_slice(data.get(y * stride..y * stride + row).ok_or("a converted frame is short")?);
        }
        RgbImage::from_raw(w, h, rgb).map(DynamicImage::ImageRgb8).ok_or_else(|| "a converted frame is short".into())
    }
}

fn check_frame(w: u32, h: u32, limits: &VideoLimits) -> std::result::Result<(), String> {
    if w == 0 || h == 0 {
        return Err(format!("a frame is empty ({w}x{h})"));
    }
    if w > limits.max_frame_side || h > limits.max_frame_side || u64::from(w) * u64::from(h) > limits.max_frame_pixels {
        return Err(format!(
            "its frames are {w}x{h}, over the limit of {} pixels a side and {} in all",
            limits.max_frame_side, limits.max_frame_pixels
        ));
    }
    Ok(())
}
