//! The demo worker's script: what a coding agent's run looks like, step by step, with the
//! pauses between events that make it feel live. Pure data, so its shape is testable.

use std::time::Duration;

use serde_json::{json, Value};
use tether_types::event::kind;
use tether_types::Task;

/// The demo's steps, in order.
pub const STEPS: [&str; 5] = ["hydrate", "clone", "agent", "test", "open_pr"];

/// One thing the demo does inside a step.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Wait this long at speed 1.
    Pause(Duration),
    /// Send an event of this step.
    Emit { kind: &'static str, data: Value },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScriptStep {
    pub name: &'static str,
    pub actions: Vec<Action>,
    /// What completing the step stores, and a retry gets back instead of running it again.
    pub checkpoint: Value,
}

/// Tools the simulated agent uses, with a believable input and output each.
const TOOLS: [(&str, &str, &str); 6] = [
    (
        "read_file",
        "src/lib.rs",
        "pub fn parse(input: &str) -> Result<Config, Error> {",
    ),
    (
        "bash",
        "rg -n \"flaky\" tests/",
        "tests/retry.rs:41:    // flaky: depends on timing",
    ),
    (
        "edit_file",
        "tests/retry.rs: wait for the condition, not a fixed sleep",
        "1 file changed, 6 insertions(+), 3 deletions(-)",
    ),
    ("bash", "cargo build", "Finished `dev` profile in 4.2s"),
    ("read_file", "Cargo.toml", "[package]\nname = \"app\""),
    ("bash", "git diff --stat", " tests/retry.rs | 9 ++++++---"),
];

/// A small deterministic generator, so one task always gets the same run (and a retry of it
/// the same events), while different tasks differ.
struct Dice(u64);

impl Dice {
    fn for_task(task: &Task) -> Dice {
        // FNV-1a of the id.
        let seed = task
            .id
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        Dice(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    fn millis(&mut self, base: u64, spread: u64) -> Duration {
        Duration::from_millis(base + self.below(spread + 1))
    }
}

fn emit(kind: &'static str, data: Value) -> Action {
    Action::Emit { kind, data }
}

/// The whole run of `task`.
pub fn script(task: &Task) -> Vec<ScriptStep> {
    let mut dice = Dice::for_task(task);
    let repo = task
        .spec
        .repository
        .clone()
        .unwrap_or_else(|| "example/app".to_string());
    let commit = format!("{:012x}", dice.below(1 << 48));
    let turns = task.spec.max_turns.unwrap_or(4).clamp(1, 6) as usize;
    let pr = 100 + dice.below(900);
    let pr_url = format!("https://github.com/{repo}/pull/{pr}");

    let hydrate = ScriptStep {
        name: "hydrate",
        actions: vec![
            emit(kind::LOG, json!({"line": "loading the task's context"})),
            Action::Pause(dice.millis(250, 150)),
            emit(
                kind::LOG,
                json!({"line": format!("task: {}", task.spec.description)}),
            ),
        ],
        checkpoint: json!({"context": "loaded"}),
    };

    let clone = ScriptStep {
        name: "clone",
        actions: vec![
            emit(kind::LOG, json!({"line": format!("cloning {repo}")})),
            Action::Pause(dice.millis(500, 400)),
            emit(
                kind::LOG,
                json!({"line": "receiving objects: 100% (2841/2841), done"}),
            ),
            Action::Pause(dice.millis(200, 200)),
            emit(
                kind::LOG,
                json!({"line": format!("checked out main at {commit}")}),
            ),
        ],
        checkpoint: json!({"repository": repo, "commit": commit}),
    };

    let mut agent = Vec::new();
    let (mut cost, mut input_tokens, mut output_tokens) = (0.0f64, 0u64, 0u64);
    for turn in 1..=turns {
        let (tool, input, output) = TOOLS[(dice.below(TOOLS.len() as u64)) as usize];
        input_tokens += 1500 + dice.below(3000);
        output_tokens += 200 + dice.below(600);
        cost = (input_tokens as f64 * 3.0 + output_tokens as f64 * 15.0) / 1_000_000.0;
        agent.push(emit(kind::AGENT_TURN, json!({"turn": turn})));
        agent.push(Action::Pause(dice.millis(300, 300)));
        agent.push(emit(
            kind::AGENT_TOOL_CALL,
            json!({"tool_name": tool, "tool_input_preview": input, "turn": turn}),
        ));
        agent.push(Action::Pause(dice.millis(400, 500)));
        agent.push(emit(
            kind::AGENT_TOOL_RESULT,
            json!({"tool_name": tool, "ok": true, "output_preview": output}),
        ));
        agent.push(emit(
            kind::AGENT_COST_UPDATE,
            json!({
                "total_cost_usd": (cost * 10_000.0).round() / 10_000.0,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
            }),
        ));
        if turn == 1 {
            agent.push(emit(
                kind::AGENT_MILESTONE,
                json!({"milestone": "plan ready"}),
            ));
        }
    }
    agent.push(emit(
        kind::AGENT_MILESTONE,
        json!({"milestone": "change implemented"}),
    ));
    let agent = ScriptStep {
        name: "agent",
        actions: agent,
        checkpoint: json!({"turns": turns, "cost_usd": (cost * 10_000.0).round() / 10_000.0}),
    };

    let passed = 40 + dice.below(200);
    let test = ScriptStep {
        name: "test",
        actions: vec![
            emit(
                kind::AGENT_TOOL_CALL,
                json!({"tool_name": "bash", "tool_input_preview": "cargo test", "turn": turns}),
            ),
            Action::Pause(dice.millis(600, 600)),
            emit(
                kind::AGENT_TOOL_RESULT,
                json!({"tool_name": "bash", "ok": true,
                       "output_preview": format!("test result: ok. {passed} passed; 0 failed")}),
            ),
            emit(kind::AGENT_MILESTONE, json!({"milestone": "tests pass"})),
        ],
        checkpoint: json!({"passed": passed, "failed": 0}),
    };

    let open_pr = ScriptStep {
        name: "open_pr",
        actions: vec![
            emit(kind::LOG, json!({"line": "pushing branch tether/fix"})),
            Action::Pause(dice.millis(300, 300)),
            emit(
                kind::AGENT_MILESTONE,
                json!({"milestone": format!("pull request opened: {pr_url}"), "url": pr_url}),
            ),
        ],
        checkpoint: json!({"pr_url": pr_url}),
    };

    vec![hydrate, clone, agent, test, open_pr]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_types::{TaskId, TaskSpec, TaskState};

    fn task(random: u128, max_turns: Option<u32>) -> Task {
        Task {
            id: TaskId::from_random(random),
            owner: "alice".into(),
            state: TaskState::Running,
            attempt: 1,
            spec: TaskSpec {
                description: "fix the flaky test".into(),
                repository: Some("org/app".into()),
                max_turns,
                ..TaskSpec::default()
            },
            stream_url: String::new(),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            status: None,
        }
    }

    fn kinds(step: &ScriptStep) -> Vec<&'static str> {
        step.actions
            .iter()
            .filter_map(|a| match a {
                Action::Emit { kind, .. } => Some(*kind),
                Action::Pause(_) => None,
            })
            .collect()
    }

    fn emitted<'a>(step: &'a ScriptStep, wanted: &str) -> Vec<&'a Value> {
        step.actions
            .iter()
            .filter_map(|a| match a {
                Action::Emit { kind, data } if *kind == wanted => Some(data),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_script_runs_the_five_steps_in_order_and_ends_with_a_pull_request() {
        let script = script(&task(1, None));
        let names: Vec<_> = script.iter().map(|s| s.name).collect();
        assert_eq!(names, STEPS);
        let open_pr = &script[4];
        let milestone = emitted(open_pr, kind::AGENT_MILESTONE)[0];
        let url = milestone["url"].as_str().unwrap();
        assert!(url.starts_with("https://github.com/org/app/pull/"), "{url}");
        assert_eq!(open_pr.checkpoint["pr_url"], url);
    }

    #[test]
    fn each_agent_turn_calls_a_tool_gets_its_result_and_updates_the_cost() {
        let script = script(&task(2, Some(3)));
        let agent = &script[2];
        let turns = emitted(agent, kind::AGENT_TURN);
        assert_eq!(turns.len(), 3);
        assert_eq!(emitted(agent, kind::AGENT_TOOL_CALL).len(), 3);
        assert_eq!(emitted(agent, kind::AGENT_TOOL_RESULT).len(), 3);
        for call in emitted(agent, kind::AGENT_TOOL_CALL) {
            assert!(call["tool_name"].is_string() && call["tool_input_preview"].is_string());
            assert!(call["turn"].is_u64());
        }
        let costs: Vec<f64> = emitted(agent, kind::AGENT_COST_UPDATE)
            .iter()
            .map(|c| c["total_cost_usd"].as_f64().unwrap())
            .collect();
        assert!(costs.windows(2).all(|w| w[0] < w[1]), "{costs:?}");
        let kinds = kinds(agent);
        assert_eq!(kinds[0], kind::AGENT_TURN);
        assert_eq!(*kinds.last().unwrap(), kind::AGENT_MILESTONE);
    }

    #[test]
    fn a_task_gets_the_same_run_every_time_and_other_tasks_differ() {
        assert_eq!(script(&task(3, None)), script(&task(3, None)));
        let commits: std::collections::HashSet<_> = (10..20)
            .map(|r| script(&task(r, None))[1].checkpoint["commit"].clone())
            .collect();
        assert!(commits.len() > 1);
    }

    #[test]
    fn every_event_is_one_a_producer_may_send() {
        for step in script(&task(4, Some(6))) {
            for kind in kinds(&step) {
                assert!(!kind::RESERVED.contains(&kind), "{kind}");
            }
        }
    }

    fn total_pause(task: &Task) -> Duration {
        script(task)
            .iter()
            .flat_map(|s| &s.actions)
            .filter_map(|a| match a {
                Action::Pause(d) => Some(*d),
                Action::Emit { .. } => None,
            })
            .sum()
    }

    #[test]
    fn at_the_default_speed_a_task_takes_about_a_minute_so_a_person_can_nudge_and_cancel_it() {
        let speed = crate::worker::demo::parse_speed(crate::worker::demo::DEFAULT_SPEED).unwrap();
        for r in 0..20 {
            for turns in [None, Some(40)] {
                let at_default = total_pause(&task(r, turns)).div_f64(speed);
                assert!(
                    at_default > Duration::from_secs(40) && at_default < Duration::from_secs(120),
                    "{at_default:?}"
                );
            }
        }
    }

    #[test]
    fn a_run_takes_seconds_at_speed_one() {
        let total: Duration = script(&task(5, None))
            .iter()
            .flat_map(|s| &s.actions)
            .filter_map(|a| match a {
                Action::Pause(d) => Some(*d),
                Action::Emit { .. } => None,
            })
            .sum();
        assert!(
            total > Duration::from_secs(3) && total < Duration::from_secs(20),
            "{total:?}"
        );
    }
}
