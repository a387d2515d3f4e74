//! Tests of the coordinate mapping: hand-computed layouts and property tests.

use proptest::prelude::*;

use super::*;

fn monitor(origin: (i32, i32), size: (u32, u32), scale: f64, space: InputSpace) -> MonitorGeometry {
    MonitorGeometry {
        name: "m".into(),
        origin: OsPoint { x: origin.0, y: origin.1 },
        width: size.0,
        height: size.1,
        scale_factor: scale,
        input_space: space,
    }
}

#[test]
fn centre_of_single_monitor_maps_to_centre_pixel() {
    let g = CaptureGeometry::full_monitor(monitor((0, 0), (1920, 1080), 1.0, InputSpace::Physical), 1920, 1080).unwrap();
    assert_eq!(g.rel_to_os(Point::new(500.0, 500.0)).unwrap(), OsPoint { x: 960, y: 540 });
}

#[test]
fn monitor_left_of_primary_gets_negative_coordinates() {
    let m = monitor((-2560, 0), (2560, 1440), 1.25, InputSpace::Physical);
    let g = CaptureGeometry::full_monitor(m, 1280, 720).unwrap();
    assert_eq!(g.rel_to_os(Point::new(250.0, 500.0)).unwrap(), OsPoint { x: -2560 + 640, y: 720 });
}

#[test]
fn logical_space_divides_by_scale_factor_and_adds_origin() {
    // A 2x Retina monitor above the primary, OS coordinates in points.
    let m = monitor((-100, -900), (2880, 1800), 2.0, InputSpace::Logical);
    let g = CaptureGeometry::full_monitor(m, 1440, 900).unwrap();
    // rel 500,500 -> image 720,450 -> physical 1440,900 -> points 720,450 -> + origin.
    assert_eq!(g.rel_to_os(Point::new(500.0, 500.0)).unwrap(), OsPoint { x: 620, y: -450 });
}

#[test]
fn region_capture_adds_region_offset_within_monitor() {
    let m = monitor((1920, 0), (1920, 1080), 1.0, InputSpace::Physical);
    let region = PhysicalRegion { x: 100, y: 200, width: 800, height: 600 };
    let g = CaptureGeometry::region(m, region, 400, 300).unwrap();
    assert_eq!(g.rel_to_os(Point::new(0.0, 0.0)).unwrap(), OsPoint { x: 2020, y: 200 });
    assert_eq!(g.rel_to_os(Point::new(500.0, 500.0)).unwrap(), OsPoint { x: 2420, y: 500 });
}

#[test]
fn relative_coordinates_outside_0_to_1000_are_refused() {
    let g = CaptureGeometry::full_monitor(monitor((0, 0), (800, 600), 1.0, InputSpace::Physical), 800, 600).unwrap();
    for bad in [(-1.0, 5.0), (5.0, 1000.5), (f64::NAN, 3.0), (1e12, 0.0)] {
        assert!(g.rel_to_os(Point::new(bad.0, bad.1)).is_err(), "{bad:?}");
    }
}

#[test]
fn physical_points_outside_the_monitor_are_refused() {
    let m = monitor((-800, 0), (800, 600), 1.5, InputSpace::Physical);
    for bad in [(-0.5, 10.0), (10.0, 600.5), (801.0, 1.0), (f64::INFINITY, 1.0)] {
        assert!(matches!(m.physical_to_os(Point::new(bad.0, bad.1)), Err(AgentError::OutsideMonitor { .. })));
    }
}

#[test]
fn region_outside_the_monitor_is_rejected() {
    let m = monitor((0, 0), (800, 600), 1.0, InputSpace::Physical);
    let region = PhysicalRegion { x: 500, y: 0, width: 400, height: 100 };
    assert!(CaptureGeometry::region(m, region, 400, 100).is_err());
}

/// Several multi-monitor layouts: (origin, physical size), in both input spaces.
fn layouts() -> Vec<((i32, i32), (u32, u32))> {
    vec![
        ((0, 0), (1920, 1080)),
        ((-2560, 0), (2560, 1440)),
        ((0, -1080), (1920, 1080)),
        ((-1280, -1024), (1280, 1024)),
        ((3840, 200), (3840, 2160)),
    ]
}

fn geometry_strategy() -> impl Strategy<Value = CaptureGeometry> {
    let scales = prop::sample::select(vec![1.0, 1.25, 1.5, 2.0]);
    let spaces = prop::sample::select(vec![InputSpace::Physical, InputSpace::Logical]);
    (prop::sample::select(layouts()), scales, spaces, 0.0..0.5f64, 0.0..0.5f64, 0.2..1.0f64, 0.2..1.5f64)
        .prop_map(|((origin, size), scale, space, fx, fy, fsize, fimg)| {
            let m = monitor(origin, size, scale, space);
            // A region starting at fractions fx, fy of the monitor, fsize of what is left.
            let x = (f64::from(size.0) * fx) as u32;
            let y = (f64::from(size.1) * fy) as u32;
            let w = (((f64::from(size.0 - x)) * fsize) as u32).max(1);
            let h = (((f64::from(size.1 - y)) * fsize) as u32).max(1);
            let region = PhysicalRegion { x, y, width: w, height: h };
            let iw = ((f64::from(w) * fimg) as u32).max(1);
            let ih = ((f64::from(h) * fimg) as u32).max(1);
            CaptureGeometry::region(m, region, iw, ih).unwrap()
        })
}

fn rel() -> impl Strategy<Value = f64> {
    0.0..=1000.0f64
}

proptest! {
    #[test]
    fn point_inside_a_box_in_the_image_lands_inside_the_same_box_on_screen(
        g in geometry_strategy(), a in (rel(), rel()), b in (rel(), rel()), t in (0.0..=1.0f64, 0.0..=1.0f64)
    ) {
        let bx = Rect::from_corners(Point::<Rel1000>::new(a.0, a.1), Point::new(b.0, b.1));
        let p = Point::<Rel1000>::new(bx.min.x + t.0 * (bx.max.x - bx.min.x), bx.min.y + t.1 * (bx.max.y - bx.min.y));
        let lo = g.rel_to_os(bx.min).unwrap();
        let hi = g.rel_to_os(bx.max).unwrap();
        let q = g.rel_to_os(p).unwrap();
        prop_assert!(lo.x <= q.x && q.x <= hi.x && lo.y <= q.y && q.y <= hi.y, "{lo:?} {q:?} {hi:?}");
        prop_assert!(g.monitor.contains_os(q));
    }

    #[test]
    fn every_mapped_point_lies_on_the_target_monitor_and_in_the_captured_region(g in geometry_strategy(), p in (rel(), rel())) {
        let q = g.rel_to_os(Point::new(p.0, p.1)).unwrap();
        prop_assert!(g.monitor.contains_os(q));
        let phys = g.monitor.os_to_physical(q);
        let r = g.region;
        let unit = if g.monitor.input_space == InputSpace::Logical { g.monitor.scale_factor } else { 1.0 };
        prop_assert!(phys.x >= f64::from(r.x) - unit && phys.x <= f64::from(r.x + r.width));
        prop_assert!(phys.y >= f64::from(r.y) - unit && phys.y <= f64::from(r.y + r.height));
    }

    #[test]
    fn os_point_round_trips_through_relative_coordinates(g in geometry_strategy(), f in (0.0..1.0f64, 0.0..1.0f64)) {
        let (w, h) = g.monitor.os_size();
        let p = OsPoint {
            x: g.monitor.origin.x + (f.0 * w).floor() as i32,
            y: g.monitor.origin.y + (f.1 * h).floor() as i32,
        };
        let rel = g.os_to_rel(p);
        // Only points inside the captured region have a relative coordinate in 0..=1000.
        if (0.0..=1000.0).contains(&rel.x) && (0.0..=1000.0).contains(&rel.y) {
            let back = g.rel_to_os(rel).unwrap();
            prop_assert_eq!(back, p, "{:?}", rel);
        } else {
            prop_assert!(g.rel_to_os(rel).is_err());
        }
    }

    #[test]
    fn physical_points_beyond_the_monitor_edges_are_refused(g in geometry_strategy(), d in 1.0..5000.0f64, side in 0usize..4) {
        let (w, h) = (f64::from(g.monitor.width), f64::from(g.monitor.height));
        let p = match side { 0 => Point::new(-d, h / 2.0), 1 => Point::new(w + d, h / 2.0), 2 => Point::new(w / 2.0, -d), _ => Point::new(w / 2.0, h + d) };
        prop_assert!(g.monitor.physical_to_os(p).is_err());
    }
}
