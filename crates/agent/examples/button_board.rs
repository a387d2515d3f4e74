//! Manual test helper: shows the coloured button board used by the X tests on `$DISPLAY`
//! and prints `CLICK <name> <mouse button> <root x> <root y>` for every press.

#[path = "../tests/support/board.rs"]
mod board;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let b = board::Board::spawn()?;
    for spec in board::BUTTONS {
        println!("BUTTON {} x={} y={} w={} h={}", spec.name, spec.x, spec.y, spec.w, spec.h);
    }
    println!("READY");
    let mut seen = 0;
    loop {
        let clicks = b.clicks();
        for c in &clicks[seen..] {
            println!("CLICK {} {} {} {}", c.button_name, c.mouse_button, c.root_x, c.root_y);
        }
        seen = clicks.len();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
