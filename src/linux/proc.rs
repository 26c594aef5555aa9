//! Facts about processes read from /proc: start time (to tell a live container process
//! from a recycled pid) and run state.

/// (state char, start time in clock ticks since boot) of `pid`.
pub fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<(char, u64)> {
    // The command name is in parentheses and may contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    // After the name: state is field 3 of the man page, starttime field 22.
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((state, start))
}

/// The process `pid` is the one that started at `start` and has not exited.
pub fn alive(pid: i32, start: u64) -> bool {
    matches!(stat(pid), Some((s, t)) if t == start && s != 'Z' && s != 'X')
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_odd_names() {
        let line = "123 (a b) c) S 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(super::parse_stat(line), Some(('S', 98765)));
    }

    #[test]
    fn self_is_alive() {
        let me = std::process::id() as i32;
        let (_, start) = super::stat(me).unwrap();
        assert!(super::alive(me, start));
        assert!(!super::alive(me, start + 1));
    }
}
