//! `*` and `?` patterns, as OpenSSH's `Host` lines and `--limit` use them.

/// `*` any run of characters, `?` exactly one; everything else literal.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching() {
        for (p, t, ok) in [
            ("*", "", true),
            ("*", "anything", true),
            ("web?", "web1", true),
            ("web?", "web", false),
            ("web?", "web12", false),
            ("*.corp", "a.corp", true),
            ("*.corp", "a.corp.x", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("10.0.*", "10.0.3.4", true),
        ] {
            assert_eq!(glob_matches(p, t), ok, "{p} {t}");
        }
    }
}
