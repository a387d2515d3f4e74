//! The protocol mapping: which answers approve an action, how replies become MCP results.

use super::*;

fn answer(v: Value) -> ElicitResult {
    serde_json::from_value(v).unwrap()
}

#[test]
fn only_an_accepted_form_with_approve_true_approves() {
    assert_eq!(approved(Some(&answer(json!({"action": "accept", "content": {"approve": true}})))), Decision::Approve);
    for no in [
        json!({"action": "accept", "content": {"approve": false}}),
        json!({"action": "accept", "content": {"approve": "true"}}),
        json!({"action": "accept", "content": {}}),
        json!({"action": "accept"}),
        json!({"action": "decline"}),
        json!({"action": "cancel", "content": {"approve": true}}),
    ] {
        assert_eq!(approved(Some(&answer(no.clone()))), Decision::Reject, "{no}");
    }
    assert_eq!(approved(None), Decision::Reject);
}

#[test]
fn the_form_asks_one_required_yes_no_question() {
    let ElicitRequestParams::FormElicitationParams { message, requested_schema, .. } = form("Allow a click?").unwrap() else { panic!() };
    assert_eq!(message, "Allow a click?");
    let schema = serde_json::to_value(requested_schema).unwrap();
    assert_eq!(schema["properties"]["approve"]["type"], "boolean");
    assert_eq!(schema["required"], json!(["approve"]));
}

#[test]
fn replies_become_tool_results_or_protocol_errors() {
    let done = to_result(Reply::Done { text: "hi".into(), structured: Some(json!({"a": 1})), png: Some(vec![1, 2, 3]) }).unwrap();
    assert_eq!(done.is_error, Some(false));
    assert_eq!(done.structured_content, Some(json!({"a": 1})));
    let v = serde_json::to_value(&done.content).unwrap();
    assert_eq!(v[0]["text"], "hi");
    assert_eq!(v[1]["mimeType"], "image/png");
    assert_eq!(v[1]["data"], "AQID");
    let refused = to_result(Reply::Refused("no".into())).unwrap();
    assert_eq!(refused.is_error, Some(true));
    let bad = to_result(Reply::Bad("no window 7".into())).unwrap_err();
    assert_eq!(bad.code, rmcp::model::ErrorCode::INVALID_PARAMS);
}

#[test]
fn tools_say_whether_they_act() {
    use crate::mcp::screens::DesktopScreens;
    use crate::mcp::McpConfig;
    use screenpilot_agent::NoInput;
    let core = McpCore::new(McpConfig::default(), Arc::new(DesktopScreens), Arc::new(std::sync::Mutex::new(Box::new(NoInput("none".into())))));
    let tools = ScreenServer::new(Arc::new(core)).tools();
    assert_eq!(tools.len(), ToolName::ALL.len());
    for t in tools {
        let acts = t.name.parse::<ToolName>().unwrap().acts();
        let a = t.annotations.unwrap();
        assert_eq!((a.read_only_hint, a.destructive_hint), (Some(!acts), Some(acts)), "{}", t.name);
    }
}
