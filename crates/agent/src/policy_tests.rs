//! Tests of the action policy.

use std::time::{Duration, Instant};

use super::*;
use crate::coords::{InputSpace, OsPoint};
use crate::model_action::MouseButton;

fn monitor() -> MonitorGeometry {
    MonitorGeometry { name: "m".into(), origin: OsPoint { x: 0, y: 0 }, width: 10, height: 10, scale_factor: 1.0, input_space: InputSpace::Physical }
}

fn click() -> (ModelAction, ScreenAction) {
    (
        ModelAction::Click { button: MouseButton::Left, count: 1, coordinate: None },
        ScreenAction::Click { button: MouseButton::Left, count: 1, at: None },
    )
}

struct Counting(u32, Decision);
impl Confirmer for Counting {
    fn confirm(&mut self, _: &ConfirmRequest<'_>) -> Decision {
        self.0 += 1;
        self.1
    }
}

fn ask(gate: &mut Gate, confirmer: &mut dyn Confirmer) -> Verdict {
    let (m, a) = click();
    let mon = monitor();
    let req = ConfirmRequest { model_action: &m, action: &a, monitor: &mon };
    gate.authorize(&req, confirmer, &StopFlag::new()).unwrap()
}

#[test]
fn actions_are_off_by_default_and_the_user_is_not_even_asked() {
    let mut c = Counting(0, Decision::Approve);
    assert_eq!(ask(&mut Gate::new(Policy::default()), &mut c), Verdict::ActionsDisabled);
    assert_eq!(c.0, 0);
}

#[test]
fn every_action_is_confirmed_by_default_once_enabled() {
    let mut gate = Gate::new(Policy { actions_enabled: true, ..Policy::default() });
    let mut yes = Counting(0, Decision::Approve);
    assert_eq!(ask(&mut gate, &mut yes), Verdict::Approved);
    assert_eq!(ask(&mut gate, &mut yes), Verdict::Approved);
    assert_eq!(yes.0, 2);
    assert_eq!(ask(&mut gate, &mut Counting(0, Decision::Reject)), Verdict::RejectedByUser);
}

#[test]
fn auto_mode_stops_at_the_step_limit_without_asking() {
    let mut gate = Gate::new(Policy { actions_enabled: true, mode: Mode::Auto(AutoLimits::new(3, Duration::ZERO)) });
    let mut c = Counting(0, Decision::Reject);
    let verdicts: Vec<Verdict> = (0..4).map(|_| ask(&mut gate, &mut c)).collect();
    assert_eq!(verdicts, vec![Verdict::Approved, Verdict::Approved, Verdict::Approved, Verdict::StepLimitReached]);
    assert_eq!(c.0, 0);
    assert_eq!(AutoLimits::default().max_steps(), 15);
}

#[test]
fn auto_mode_spaces_actions_by_the_rate_limit() {
    let mut gate = Gate::new(Policy { actions_enabled: true, mode: Mode::Auto(AutoLimits::new(5, Duration::from_millis(150))) });
    let mut c = FixedConfirmer(Decision::Approve);
    let t0 = Instant::now();
    for _ in 0..3 {
        assert_eq!(ask(&mut gate, &mut c), Verdict::Approved);
    }
    assert!(t0.elapsed() >= Duration::from_millis(300), "{:?}", t0.elapsed());
}

#[test]
fn waiting_needs_no_permission() {
    let mut gate = Gate::new(Policy::default());
    let m = ModelAction::Wait { seconds: 1.0 };
    let a = ScreenAction::Wait { duration: Duration::from_secs(1) };
    let mon = monitor();
    let req = ConfirmRequest { model_action: &m, action: &a, monitor: &mon };
    assert_eq!(gate.authorize(&req, &mut FixedConfirmer(Decision::Reject), &StopFlag::new()).unwrap(), Verdict::Approved);
}

fn ask_about(gate: &mut Gate, confirmer: &mut dyn Confirmer, action: ScreenAction) -> Verdict {
    let m = ModelAction::Wait { seconds: 0.0 }; // what the model wrote does not matter to the gate
    let mon = monitor();
    let req = ConfirmRequest { model_action: &m, action: &action, monitor: &mon };
    gate.authorize(&req, confirmer, &StopFlag::new()).unwrap()
}

fn chord(combo: &str) -> ScreenAction {
    ScreenAction::Key { keys: crate::keys::parse_key_combo([combo]).unwrap() }
}

fn auto(max_steps: u32, interval: Duration) -> Policy {
    Policy { actions_enabled: true, mode: Mode::Auto(AutoLimits::new(max_steps, interval)) }
}

#[test]
fn auto_mode_asks_about_always_ask_actions_and_a_reject_refuses_them() {
    let mut gate = Gate::new(auto(10, Duration::ZERO));
    let mut no = Counting(0, Decision::Reject);
    for action in [chord("alt+F4"), chord("Control+Shift+W"), chord("cmd+q"), chord("super+l"), chord("shift+Delete"), ScreenAction::Type { text: "ls\n".into() }] {
        assert_eq!(ask_about(&mut gate, &mut no, action.clone()), Verdict::RejectedByUser, "{action:?}");
    }
    assert_eq!(no.0, 6);
    assert_eq!(gate.steps_taken(), 0, "a rejected action is no step");
    // Ordinary actions still run without asking.
    assert_eq!(ask_about(&mut gate, &mut no, chord("ctrl+c")), Verdict::Approved);
    assert_eq!(ask_about(&mut gate, &mut no, ScreenAction::Type { text: "ls".into() }), Verdict::Approved);
    assert_eq!(ask(&mut gate, &mut no), Verdict::Approved);
    assert_eq!(no.0, 6);
    // Approved by the user, it runs and counts as a step.
    let mut yes = Counting(0, Decision::Approve);
    assert_eq!(ask_about(&mut gate, &mut yes, chord("ctrl+w")), Verdict::Approved);
    assert_eq!((yes.0, gate.steps_taken()), (1, 4));
}

#[test]
fn step_and_rate_limits_still_apply_to_always_ask_actions() {
    let mut gate = Gate::new(auto(2, Duration::from_millis(150)));
    let mut yes = Counting(0, Decision::Approve);
    let t0 = Instant::now();
    assert_eq!(ask_about(&mut gate, &mut yes, chord("ctrl+q")), Verdict::Approved);
    assert_eq!(ask_about(&mut gate, &mut yes, chord("ctrl+q")), Verdict::Approved);
    assert!(t0.elapsed() >= Duration::from_millis(150), "rate limit: {:?}", t0.elapsed());
    // At the limit the user is not even asked.
    assert_eq!(ask_about(&mut gate, &mut yes, chord("ctrl+q")), Verdict::StepLimitReached);
    assert_eq!(yes.0, 2);
}

#[test]
fn always_ask_actions_stay_off_without_opt_in_and_are_asked_once_in_confirm_mode() {
    let mut c = Counting(0, Decision::Approve);
    assert_eq!(ask_about(&mut Gate::new(Policy::default()), &mut c, chord("alt+F4")), Verdict::ActionsDisabled);
    assert_eq!(c.0, 0);
    let mut gate = Gate::new(Policy { actions_enabled: true, mode: Mode::ConfirmEach });
    assert_eq!(ask_about(&mut gate, &mut c, chord("alt+F4")), Verdict::Approved);
    assert_eq!(c.0, 1);
}

#[test]
fn the_confirm_request_names_the_reason() {
    let (m, mon) = (ModelAction::Wait { seconds: 0.0 }, monitor());
    let a = chord("ctrl+alt+l");
    assert_eq!(ConfirmRequest { model_action: &m, action: &a, monitor: &mon }.always_asks(), Some("ctrl+alt+l locks the screen"));
    let (_, click) = click();
    assert_eq!(ConfirmRequest { model_action: &m, action: &click, monitor: &mon }.always_asks(), None);
}
