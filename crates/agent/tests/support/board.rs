//! Test helper: an X11 window (x11rb) titled [`TITLE`] with coloured "buttons" (child windows)
//! at known screen places; records every button press with the button's name and root position.
//! Also used by crates/desktop/tests/window_capture.rs and crates/cli/tests/do_task.rs.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt, CreateWindowAux, EventMask, PropMode, WindowClass};
use x11rb::protocol::Event;
use x11rb::wrapper::ConnectionExt as _;
use x11rb::COPY_DEPTH_FROM_PARENT;

/// A button: name, colour (0xRRGGBB) and rectangle in root (screen) coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonSpec {
    pub name: &'static str,
    pub rgb: u32,
    pub x: i16,
    pub y: i16,
    pub w: u16,
    pub h: u16,
}

impl ButtonSpec {
    pub fn center(&self) -> (i32, i32) {
        (i32::from(self.x) + i32::from(self.w) / 2, i32::from(self.y) + i32::from(self.h) / 2)
    }
}

/// One recorded press.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub button_name: &'static str,
    pub mouse_button: u8,
    pub root_x: i16,
    pub root_y: i16,
}

/// The board window's title (WM_NAME), so window pickers list it.
pub const TITLE: &str = "ScreenPilot test board";

/// The board window's position and size on screen.
pub const BOARD: (i16, i16, u16, u16) = (200, 150, 900, 600);

/// The buttons, in root coordinates (inside [`BOARD`]).
pub const BUTTONS: [ButtonSpec; 4] = [
    ButtonSpec { name: "red", rgb: 0xFF0000, x: 260, y: 210, w: 160, h: 80 },
    ButtonSpec { name: "green", rgb: 0x00FF00, x: 700, y: 210, w: 160, h: 80 },
    ButtonSpec { name: "blue", rgb: 0x0000FF, x: 260, y: 560, w: 160, h: 80 },
    ButtonSpec { name: "yellow", rgb: 0xFFFF00, x: 700, y: 560, w: 40, h: 30 },
];

/// A running board; dropping it closes the window.
pub struct Board {
    /// The board's X window id.
    pub window: u32,
    pub clicks: Arc<Mutex<Vec<Click>>>,
    quit: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Board {
    /// Opens the board with [`BUTTONS`] on `$DISPLAY` and waits until it is mapped.
    pub fn spawn() -> Result<Board, Box<dyn std::error::Error>> {
        Self::spawn_with(&BUTTONS)
    }

    /// Opens the board with these buttons (root coordinates inside [`BOARD`]).
    pub fn spawn_with(buttons: &[ButtonSpec]) -> Result<Board, Box<dyn std::error::Error>> {
        let (conn, screen_num) = x11rb::connect(None)?;
        let screen = conn.setup().roots[screen_num].clone();
        let (bx, by, bw, bh) = BOARD;
        let board = conn.generate_id()?;
        let aux = CreateWindowAux::new().background_pixel(0x808080).event_mask(EventMask::STRUCTURE_NOTIFY);
        conn.create_window(COPY_DEPTH_FROM_PARENT, board, screen.root, bx, by, bw, bh, 0, WindowClass::INPUT_OUTPUT, 0, &aux)?;
        conn.change_property8(PropMode::REPLACE, board, AtomEnum::WM_NAME, AtomEnum::STRING, TITLE.as_bytes())?;
        let net_wm_name = conn.intern_atom(false, b"_NET_WM_NAME")?.reply()?.atom;
        let utf8 = conn.intern_atom(false, b"UTF8_STRING")?.reply()?.atom;
        conn.change_property8(PropMode::REPLACE, board, net_wm_name, utf8, TITLE.as_bytes())?;
        let mut ids = Vec::new();
        for &b in buttons {
            let id = conn.generate_id()?;
            let aux = CreateWindowAux::new().background_pixel(b.rgb).event_mask(EventMask::BUTTON_PRESS);
            conn.create_window(COPY_DEPTH_FROM_PARENT, id, board, b.x - bx, b.y - by, b.w, b.h, 0, WindowClass::INPUT_OUTPUT, 0, &aux)?;
            ids.push((id, b.name));
        }
        conn.map_subwindows(board)?;
        // A window manager that has only just started can drop the map request (seen with
        // openbox: the board stayed unmapped and unmanaged): ask again until the board is mapped.
        let mut mapped = false;
        for _ in 0..10 {
            conn.map_window(board)?;
            conn.flush()?;
            let start = Instant::now();
            while !mapped && start.elapsed() < Duration::from_secs(1) {
                match conn.poll_for_event()? {
                    Some(Event::MapNotify(e)) if e.window == board => mapped = true,
                    Some(_) => {}
                    None => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            if mapped {
                break;
            }
        }
        if !mapped {
            return Err("the board window was not mapped within 10 s".into());
        }
        conn.get_input_focus()?.reply()?; // round trip: everything is mapped and drawn
        let clicks = Arc::new(Mutex::new(Vec::new()));
        let quit = Arc::new(AtomicBool::new(false));
        let (c2, q2) = (clicks.clone(), quit.clone());
        let thread = std::thread::spawn(move || event_loop(conn, ids, c2, q2));
        std::thread::sleep(Duration::from_millis(100));
        Ok(Board { window: board, clicks, quit, thread: Some(thread) })
    }

    /// Presses recorded so far.
    pub fn clicks(&self) -> Vec<Click> {
        self.clicks.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Waits up to `timeout` for at least `n` presses.
    pub fn wait_for_clicks(&self, n: usize, timeout: Duration) -> Vec<Click> {
        let end = Instant::now() + timeout;
        while self.clicks().len() < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.clicks()
    }
}

fn event_loop(conn: x11rb::rust_connection::RustConnection, ids: Vec<(u32, &'static str)>, clicks: Arc<Mutex<Vec<Click>>>, quit: Arc<AtomicBool>) {
    while !quit.load(Ordering::SeqCst) {
        match conn.poll_for_event() {
            Ok(Some(Event::ButtonPress(e))) => {
                if let Some((_, name)) = ids.iter().find(|(id, _)| *id == e.event) {
                    let click = Click { button_name: name, mouse_button: e.detail, root_x: e.root_x, root_y: e.root_y };
                    if let Ok(mut c) = clicks.lock() {
                        c.push(click);
                    }
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return,
        }
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
