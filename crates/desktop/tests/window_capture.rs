//! Window capture on the X display ($DISPLAY; scripts/test.sh starts Xvfb): xcap lists windows
//! from the window manager's `_NET_CLIENT_LIST_STACKING`, so without a window manager there are
//! none. When the display has no EWMH window manager, this test starts openbox for its duration
//! (scripts/setup.sh installs it). It opens the agent tests' board window (coloured buttons at
//! known offsets), finds it in the app's window list, captures it with the app's capture code and
//! checks the pixels and the image → screen mapping.

#[path = "../../agent/tests/support/board.rs"]
mod board;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use board::{Board, BOARD, BUTTONS, TITLE};
use screenpilot_agent::{ImagePx, Point};
use screenpilot_desktop::screen;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt};

/// Whether an EWMH window manager runs: the root's `_NET_SUPPORTING_WM_CHECK` names a window
/// that still exists and names itself (a killed manager can leave the root property behind).
fn has_window_manager() -> bool {
    let (conn, n) = x11rb::connect(None).expect("connect to $DISPLAY");
    let root = conn.setup().roots[n].root;
    let atom = conn.intern_atom(false, b"_NET_SUPPORTING_WM_CHECK").unwrap().reply().unwrap().atom;
    let check = |w: u32| -> Option<u32> {
        let reply = conn.get_property(false, w, atom, AtomEnum::WINDOW, 0, 1).ok()?.reply().ok()?;
        reply.value32().and_then(|mut v| v.next())
    };
    check(root).is_some_and(|child| check(child) == Some(child))
}

/// openbox, started by this test; stopped when dropped.
struct WindowManager(Option<Child>);

impl WindowManager {
    fn ensure() -> Self {
        if has_window_manager() {
            return Self(None);
        }
        let child = Command::new("openbox")
            .args(["--sm-disable"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openbox (scripts/setup.sh installs it)");
        let wm = Self(Some(child));
        let start = Instant::now();
        while !has_window_manager() {
            assert!(start.elapsed() < Duration::from_secs(20), "openbox did not take over the display");
            std::thread::sleep(Duration::from_millis(50));
        }
        wm
    }
}

impl Drop for WindowManager {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            // SIGTERM: openbox gives the windows back to the root and clears its root properties.
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let start = Instant::now();
            while matches!(c.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where the X server has the board's top-left corner (independently of xcap).
fn board_origin(window: u32) -> (i32, i32) {
    let (conn, n) = x11rb::connect(None).unwrap();
    let root = conn.setup().roots[n].root;
    let t = conn.translate_coordinates(window, root, 0, 0).unwrap().reply().unwrap();
    (i32::from(t.dst_x), i32::from(t.dst_y))
}

#[test]
fn a_window_is_listed_and_captured_with_its_pixels_and_screen_position() {
    assert!(std::env::var("DISPLAY").is_ok(), "needs an X display (scripts/test.sh starts Xvfb)");
    let _wm = WindowManager::ensure();
    let board = Board::spawn().unwrap();

    let start = Instant::now();
    let listed = loop {
        let windows = screen::windows().unwrap();
        if let Some(w) = windows.iter().find(|w| w.title == TITLE) {
            break w.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the board is not in the window list: {windows:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(listed.id, board.window);

    // The window manager may have moved the board (and drawn a frame around it): wait until it
    // has settled, then capture.
    std::thread::sleep(Duration::from_millis(300));
    let shot = screen::capture_window(listed.id).unwrap();
    let (_, _, bw, bh) = BOARD;
    assert_eq!(shot.image.dimensions(), (u32::from(bw), u32::from(bh)), "the capture is the window, not the screen");
    assert_eq!(shot.image.get_pixel(4, 4).0, [0x80, 0x80, 0x80], "the board's background");
    for b in BUTTONS {
        let (cx, cy) = b.center();
        let (ix, iy) = ((cx - i32::from(BOARD.0)) as u32, (cy - i32::from(BOARD.1)) as u32);
        let rgb = [(b.rgb >> 16) as u8, (b.rgb >> 8) as u8, b.rgb as u8];
        assert_eq!(shot.image.get_pixel(ix, iy).0, rgb, "{} button at image ({ix}, {iy})", b.name);
    }

    // Image pixel (0, 0) maps to the board's top-left corner on the screen.
    let (ox, oy) = board_origin(board.window);
    let os = shot.geometry.image_to_os(Point::<ImagePx>::new(0.0, 0.0)).unwrap();
    assert_eq!((os.x, os.y), (ox, oy));
    drop(board);
}
