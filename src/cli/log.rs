//! --log / --log-format: errors and warnings as runc writes them. In json format each line is
//! `{"level":"error","msg":"...","time":"..."}`, which containerd reads back to show the
//! user why the runtime failed. Errors also go to stderr.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

struct Sink {
    file: Option<std::fs::File>,
    json: bool,
    debug: bool,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

pub fn init(path: Option<&Path>, format: &str, debug: bool) {
    let file = path.and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sink {
        file,
        json: format == "json",
        debug,
    });
}

fn line(level: &str, msg: &str, json: bool) -> String {
    let time = crate::state::rfc3339(std::time::SystemTime::now());
    if json {
        serde_json::json!({"level": level, "msg": msg, "time": time}).to_string() + "\n"
    } else {
        format!("time={time:?} level={level} msg={msg:?}\n")
    }
}

fn emit(level: &str, msg: &str, to_stderr: bool) {
    let mut guard = SINK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(Sink { file: Some(f), json, .. }) = guard.as_mut() {
        let _ = f.write_all(line(level, msg, *json).as_bytes());
    }
    if to_stderr {
        let _ = writeln!(std::io::stderr(), "tinyrt: {level}: {msg}");
    }
}

pub fn error(msg: &str) {
    emit("error", msg, true);
}

pub fn warn(msg: &str) {
    emit("warning", msg, true);
}

#[allow(dead_code)]
pub fn debug(msg: &str) {
    let on = SINK.lock().map(|g| g.as_ref().is_some_and(|s| s.debug)).unwrap_or(false);
    if on {
        emit("debug", msg, false);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_line_shape() {
        let l = super::line("error", "boom \"x\"", true);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "boom \"x\"");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
}
