//! Paths as words of a POSIX shell command, for the commands that messages suggest
//! (`continue it with `cpflow train --out 'my runs/a' --resume``): a path with a space, a
//! quote, a `$` or a non-ASCII letter is quoted, so that the suggested command can be pasted
//! as it is.

use std::path::Path;

/// `path` as one shell word: unchanged when it needs no quoting (`runs/a-1`), else quoted
/// (by `shlex`: single quotes, or double quotes around the characters single quotes cannot
/// hold). A path that is not UTF-8 is shown lossily (its command cannot be pasted anyway).
pub fn shell_word(path: &Path) -> String {
    let text = path.to_string_lossy();
    match shlex::try_quote(&text) {
        Ok(quoted) => quoted.into_owned(),
        // Only a NUL byte, which no path holds.
        Err(_) => text.into_owned(),
    }
}

/// The command that continues (or, once trained, evaluates again) the run of
/// `cpflow {command}` in `out`: `cpflow {command} --out OUT --resume`, which reads the run's
/// own `OUT/config.toml` and writes into OUT whatever that file's `run.out` says (the run may
/// have been moved or copied since).
pub fn resume_command(command: &str, out: &Path) -> String {
    format!("cpflow {command} --out {} --resume", shell_word(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a POSIX shell makes of `word`: its arguments, one per line (`printf '%s\n'`).
    fn through_sh(word: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\n' {word}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{word}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Plain paths stay as they are; paths with spaces, quotes, `$`, backticks, globs or
    /// non-ASCII letters are quoted, and the shell reads each back as the one path.
    #[test]
    fn paths_survive_the_shell_as_one_word() {
        assert_eq!(shell_word(Path::new("runs/a-1_b.c")), "runs/a-1_b.c");
        assert_eq!(shell_word(Path::new("/tmp/x y")), "'/tmp/x y'");
        for p in [
            "/tmp/my runs/a",
            "runs/it's",
            "runs/\"q\"",
            "runs/$HOME`id`",
            "runs/*?[a]",
            "runs/données é",
            "runs/a\\b",
            "runs/!x ^y",
        ] {
            let word = shell_word(Path::new(p));
            assert_ne!(word, p, "{p} was not quoted");
            if cfg!(unix) {
                assert_eq!(through_sh(&word), format!("{p}\n"), "{p} as {word}");
            }
        }
        assert_eq!(
            resume_command("train", Path::new("my runs/a")),
            "cpflow train --out 'my runs/a' --resume"
        );
    }
}
