//! The command allowlist: the guest enforces it, the host's test double
//! imitates it, and the host adds skills' programs to it by basename.

/// The name the allowlist matches: the last component of `program`.
pub fn program_basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// Checks `program` against the allowlist (`*` allows all). On refusal the
/// message names the command.
pub fn check_command(allowed: &[String], program: &str) -> Result<(), String> {
    let name = program_basename(program);
    if allowed.iter().any(|a| a == "*" || a == name) {
        Ok(())
    } else {
        Err(format!(
            "command `{name}` is not on this sandbox's allowlist; allow it with the sandbox's \
             `allow_command(\"{name}\")` (or `*` for all)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_basename_and_star() {
        let list = vec!["sh".to_string(), "echo".to_string()];
        assert!(check_command(&list, "sh").is_ok());
        assert!(check_command(&list, "/bin/sh").is_ok());
        let err = check_command(&list, "curl").unwrap_err();
        assert!(err.contains("`curl`"), "{err}");
        assert!(check_command(&["*".to_string()], "anything").is_ok());
        assert!(check_command(&[], "sh").is_err());
    }
}
