//! Where events go: every event gets a sequence number and time once, then is handed to
//! each sink in turn.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::SystemTime;

use super::{EVENT_VERSION, Event, EventKind};

/// A receiver of events.
pub trait Sink {
    /// Receives one event.
    fn event(&mut self, event: &Event);
    /// Flushes buffered output.
    fn flush(&mut self) {}
}

/// Writes JSON Lines to a file.
pub struct JsonFile(BufWriter<File>);

impl JsonFile {
    /// Creates (truncating) the file, and its directory.
    pub fn create(path: &Path) -> io::Result<JsonFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(JsonFile(BufWriter::new(File::create(path)?)))
    }
}

impl Sink for JsonFile {
    fn event(&mut self, event: &Event) {
        // The event log is a record, not a control path: a full disk must not stop a build.
        if serde_json::to_writer(&mut self.0, event).is_ok() {
            let _ = self.0.write_all(b"\n");
        }
    }
    fn flush(&mut self) {
        let _ = self.0.flush();
    }
}

/// Writes JSON Lines to stdout (`--json`); a closed pipe is not an error.
pub struct JsonStdout(BufWriter<io::Stdout>);

impl JsonStdout {
    /// A sink on stdout.
    pub fn new() -> JsonStdout {
        JsonStdout(BufWriter::new(io::stdout()))
    }
}

impl Default for JsonStdout {
    fn default() -> Self {
        JsonStdout::new()
    }
}

impl Sink for JsonStdout {
    fn event(&mut self, event: &Event) {
        if serde_json::to_writer(&mut self.0, event).is_ok() {
            let _ = self.0.write_all(b"\n");
        }
        // Consumers follow the stream live.
        if !matches!(event.kind, EventKind::InstanceSkipped { .. }) {
            let _ = self.0.flush();
        }
    }
    fn flush(&mut self) {
        let _ = self.0.flush();
    }
}

/// Collects events in memory, shared with whoever holds a clone (tests, embedding).
#[derive(Clone, Default)]
pub struct Memory(pub std::sync::Arc<std::sync::Mutex<Vec<Event>>>);

impl Memory {
    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Sink for Memory {
    fn event(&mut self, event: &Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event.clone());
        }
    }
}

/// Numbers events and fans them out to sinks.
pub struct EventLog {
    run_id: String,
    seq: u64,
    sinks: Vec<Box<dyn Sink>>,
}

impl EventLog {
    /// An event log for `run_id`.
    pub fn new(run_id: String) -> EventLog {
        EventLog {
            run_id,
            seq: 0,
            sinks: Vec::new(),
        }
    }

    /// Adds a sink.
    pub fn add(&mut self, sink: Box<dyn Sink>) {
        self.sinks.push(sink);
    }

    /// Emits one event.
    pub fn emit(&mut self, instance: Option<&str>, kind: EventKind) {
        self.seq += 1;
        let event = Event {
            v: EVENT_VERSION,
            seq: self.seq,
            ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            run_id: self.run_id.clone(),
            kind,
            instance: instance.map(str::to_owned),
        };
        for s in &mut self.sinks {
            s.event(&event);
        }
    }

    /// Flushes every sink.
    pub fn flush(&mut self) {
        for s in &mut self.sinks {
            s.flush();
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.flush();
    }
}
