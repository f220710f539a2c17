//! A rollout reporter that keeps every event it is told, for tests that assert on what a rollout
//! said: the canary percents it moved through, the events themselves, and a transcript of them
//! for failure messages.

use std::sync::Mutex;

use deployer::rollout::events::{Event, RolloutReporter};

/// Every event of a rollout, in order.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl RolloutReporter for Recorder {
    fn event(&self, event: &Event) {
        self.0.lock().expect("recorded events").push(event.clone());
    }
}

impl Recorder {
    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().expect("recorded events").clone()
    }

    /// The canary's share of the traffic at each traffic move.
    pub fn canary_percents(&self) -> Vec<u8> {
        self.events()
            .iter()
            .filter_map(|event| match event {
                Event::TrafficMoved { canary_percent, .. } => Some(*canary_percent),
                _ => None,
            })
            .collect()
    }

    /// The events as JSON lines.
    pub fn transcript(&self) -> String {
        self.events()
            .iter()
            .map(|event| serde_json::to_string(event).expect("an event as JSON"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
