//! The built-in tools. Each runs inside the sandbox through the guest
//! protocol; nothing here touches the host's filesystem or processes.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::llm::ToolSpec;
use crate::{Exec, FileKind, Sandbox, WORKSPACE_DIR};

/// Files larger than this are not read into the conversation.
const MAX_READ_BYTES: u64 = 8 << 20;
/// What a command's cap leaves of `max_tool_output` for the notice of
/// what was dropped, so the result is cut once, not twice.
const NOTICE_ROOM: usize = 128;
/// Most of `find`'s listing `glob` keeps before matching.
const MAX_GLOB_LISTING: usize = 16 << 20;
/// `glob` returns at most this many paths.
const MAX_GLOB_MATCHES: usize = 500;

/// What a tool returned to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// The text the model sees.
    pub content: String,
    /// Failed, timed out or refused.
    pub is_error: bool,
    /// The exit code of the command a tool ran (`bash`), when it exited.
    pub exit_code: Option<i32>,
}

impl ToolOutcome {
    /// A successful result.
    pub fn ok(content: impl Into<String>) -> Self {
        ToolOutcome {
            content: content.into(),
            is_error: false,
            exit_code: None,
        }
    }

    /// A failed result.
    pub fn error(content: impl Into<String>) -> Self {
        ToolOutcome {
            content: content.into(),
            is_error: true,
            exit_code: None,
        }
    }
}

/// Names of the built-in tools.
pub const BUILTIN_TOOLS: &[&str] = &["bash", "read", "write", "edit", "grep", "glob", "ls"];

/// Descriptions and argument schemas of the built-in tools.
pub fn builtin_specs() -> Vec<ToolSpec> {
    let spec = |name: &str, description: &str, input_schema: Value| ToolSpec {
        name: name.into(),
        description: description.into(),
        input_schema,
    };
    vec![
        spec(
            "bash",
            "Run a shell command (sh -c) in /workspace inside the sandbox VM. Returns stdout, stderr and the exit code.",
            json!({"type": "object", "properties": {
                "command": {"type": "string", "description": "The command line"},
                "timeout_secs": {"type": "integer", "minimum": 1, "description": "Optional, capped by the box's tool timeout"}
            }, "required": ["command"], "additionalProperties": false}),
        ),
        spec(
            "read",
            "Read a text file in the sandbox. Optional 1-based `offset` line and `limit` lines.",
            json!({"type": "object", "properties": {
                "path": {"type": "string"},
                "offset": {"type": "integer", "minimum": 1},
                "limit": {"type": "integer", "minimum": 1}
            }, "required": ["path"], "additionalProperties": false}),
        ),
        spec(
            "write",
            "Create or overwrite a file in the sandbox (parent directories are created).",
            json!({"type": "object", "properties": {
                "path": {"type": "string"},
                "content": {"type": "string"}
            }, "required": ["path", "content"], "additionalProperties": false}),
        ),
        spec(
            "edit",
            "Replace exact text in a file. `old_string` must occur exactly once unless `replace_all` is true.",
            json!({"type": "object", "properties": {
                "path": {"type": "string"},
                "old_string": {"type": "string"},
                "new_string": {"type": "string"},
                "replace_all": {"type": "boolean"}
            }, "required": ["path", "old_string", "new_string"], "additionalProperties": false}),
        ),
        spec(
            "grep",
            "Search file contents with an extended regular expression; prints file:line:text.",
            json!({"type": "object", "properties": {
                "pattern": {"type": "string"},
                "path": {"type": "string", "description": "File or directory (default /workspace)"},
                "ignore_case": {"type": "boolean"}
            }, "required": ["pattern"], "additionalProperties": false}),
        ),
        spec(
            "glob",
            "List files whose path (relative to `path`, default /workspace) matches a glob such as `**/*.rs`.",
            json!({"type": "object", "properties": {
                "pattern": {"type": "string"},
                "path": {"type": "string"}
            }, "required": ["pattern"], "additionalProperties": false}),
        ),
        spec(
            "ls",
            "List a directory in the sandbox (default /workspace).",
            json!({"type": "object", "properties": {
                "path": {"type": "string"}
            }, "additionalProperties": false}),
        ),
    ]
}

/// The argument a permission rule like `bash(git *)` matches against.
pub fn primary_argument(tool: &str, args: &Value) -> Option<String> {
    let key = match tool {
        "bash" => "command",
        "read" | "write" | "edit" | "ls" => "path",
        "grep" | "glob" => "pattern",
        _ => return Some(args.to_string()),
    };
    args.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Resolves a model-given path against [`WORKSPACE_DIR`].
pub fn guest_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{WORKSPACE_DIR}/{}", path.trim_start_matches("./"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BashArgs {
    command: String,
    timeout_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    path: String,
    offset: Option<usize>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    path: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditArgs {
    path: String,
    old_string: String,
    new_string: String,
    #[serde(default)]
    replace_all: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrepArgs {
    pattern: String,
    path: Option<String>,
    #[serde(default)]
    ignore_case: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GlobArgs {
    pattern: String,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LsArgs {
    path: Option<String>,
}

fn parse<T: for<'de> Deserialize<'de>>(tool: &str, args: &Value) -> Result<T, ToolOutcome> {
    T::deserialize(args)
        .map_err(|e| ToolOutcome::error(format!("invalid arguments for `{tool}`: {e}")))
}

/// Runs built-in tool `name`; `None` when `name` is not a built-in.
/// `timeout` bounds the whole call (the guest also kills `bash` commands);
/// `max_output` bounds what the host keeps of each stream of a command
/// (its head and tail), whatever the command prints.
pub async fn run_builtin(
    sandbox: &Sandbox,
    name: &str,
    args: &Value,
    timeout: Duration,
    max_output: usize,
) -> Option<ToolOutcome> {
    if !BUILTIN_TOOLS.contains(&name) {
        return None;
    }
    // A little slack so the guest's own timeout (which reports partial
    // output) normally fires first.
    let deadline = timeout + Duration::from_secs(5);
    let call = async {
        let outcome = match name {
            "bash" => bash(sandbox, parse(name, args)?, timeout, max_output).await,
            "read" => read(sandbox, parse(name, args)?).await,
            "write" => write(sandbox, parse(name, args)?).await,
            "edit" => edit(sandbox, parse(name, args)?).await,
            "grep" => grep(sandbox, parse(name, args)?, timeout, max_output).await,
            "glob" => glob(sandbox, parse(name, args)?, timeout).await,
            _ => ls(sandbox, parse(name, args)?).await,
        };
        Ok::<_, ToolOutcome>(outcome.unwrap_or_else(|e| ToolOutcome::error(e.to_string())))
    };
    Some(match tokio::time::timeout(deadline, call).await {
        Ok(Ok(outcome)) | Ok(Err(outcome)) => outcome,
        Err(_) => ToolOutcome::error(format!("`{name}` timed out after {}s", timeout.as_secs())),
    })
}

async fn bash(
    sandbox: &Sandbox,
    a: BashArgs,
    cap: Duration,
    max_output: usize,
) -> crate::Result<ToolOutcome> {
    let timeout = a
        .timeout_secs
        .map_or(cap, |s| Duration::from_secs(s).min(cap));
    let out = sandbox
        .exec(
            Exec::shell(&a.command)
                .cwd(WORKSPACE_DIR)
                .timeout(timeout)
                .max_output(max_output.saturating_sub(NOTICE_ROOM)),
        )
        .await?;
    let mut text = out.stdout_text();
    let stderr = out.stderr_text();
    if !stderr.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("[stderr]\n");
        text.push_str(&stderr);
    }
    let status = out.status;
    if status.timed_out {
        text.push_str(&format!(
            "\n[killed: timed out after {}s]",
            timeout.as_secs()
        ));
    } else if !status.success() {
        text.push_str(&format!("\n[{status}]"));
    }
    if text.is_empty() {
        text.push_str("(no output)");
    }
    Ok(ToolOutcome {
        content: text,
        is_error: !status.success(),
        exit_code: status.code,
    })
}

async fn read_text(sandbox: &Sandbox, path: &str) -> crate::Result<Result<String, ToolOutcome>> {
    let stat = sandbox.stat(path).await?;
    if stat.kind != FileKind::File {
        return Ok(Err(ToolOutcome::error(format!(
            "{path} is not a regular file"
        ))));
    }
    if stat.size > MAX_READ_BYTES {
        return Ok(Err(ToolOutcome::error(format!(
            "{path} is {} bytes; read it in parts with bash (head, sed -n)",
            stat.size
        ))));
    }
    let bytes = match sandbox.read_file_limited(path, MAX_READ_BYTES).await {
        Ok(bytes) => bytes,
        // It grew past the limit between the stat and the read.
        Err(crate::Error::TooLarge { size, .. }) => {
            return Ok(Err(ToolOutcome::error(format!(
                "{path} is over {size} bytes; read it in parts with bash (head, sed -n)"
            ))))
        }
        Err(e) => return Err(e),
    };
    Ok(String::from_utf8(bytes)
        .map_err(|_| ToolOutcome::error(format!("{path} is not UTF-8 text"))))
}

async fn read(sandbox: &Sandbox, a: ReadArgs) -> crate::Result<ToolOutcome> {
    let path = guest_path(&a.path);
    let text = match read_text(sandbox, &path).await? {
        Ok(t) => t,
        Err(refused) => return Ok(refused),
    };
    if a.offset.is_none() && a.limit.is_none() {
        return Ok(ToolOutcome::ok(text));
    }
    let start = a.offset.unwrap_or(1).saturating_sub(1);
    let lines: Vec<&str> = text
        .lines()
        .skip(start)
        .take(a.limit.unwrap_or(usize::MAX))
        .collect();
    Ok(ToolOutcome::ok(lines.join("\n")))
}

async fn write(sandbox: &Sandbox, a: WriteArgs) -> crate::Result<ToolOutcome> {
    let path = guest_path(&a.path);
    if let Some((parent, _)) = path.rsplit_once('/') {
        if !parent.is_empty() {
            sandbox.mkdir(parent).await?;
        }
    }
    sandbox.write_file(&path, a.content.as_bytes()).await?;
    Ok(ToolOutcome::ok(format!(
        "wrote {} bytes to {path}",
        a.content.len()
    )))
}

async fn edit(sandbox: &Sandbox, a: EditArgs) -> crate::Result<ToolOutcome> {
    let path = guest_path(&a.path);
    if a.old_string.is_empty() {
        return Ok(ToolOutcome::error("old_string must not be empty"));
    }
    let text = match read_text(sandbox, &path).await? {
        Ok(t) => t,
        Err(refused) => return Ok(refused),
    };
    let count = text.matches(&a.old_string).count();
    // The result is refused before it is built: a short old_string and a
    // long new_string could otherwise ask the host for gigabytes.
    let replaced = if a.replace_all { count } else { count.min(1) };
    let grows_by = a.new_string.len().saturating_sub(a.old_string.len());
    let result_len = text.len() as u64 + (replaced as u64).saturating_mul(grows_by as u64);
    if result_len > MAX_READ_BYTES {
        return Ok(ToolOutcome::error(format!(
            "the edit would make {path} {result_len} bytes, over the {MAX_READ_BYTES}-byte limit; \
             edit it with bash instead"
        )));
    }
    let updated = match count {
        0 => {
            return Ok(ToolOutcome::error(format!(
                "old_string not found in {path}"
            )))
        }
        1 => text.replacen(&a.old_string, &a.new_string, 1),
        _ if a.replace_all => text.replace(&a.old_string, &a.new_string),
        n => {
            return Ok(ToolOutcome::error(format!(
                "old_string occurs {n} times in {path}; include more context or set replace_all"
            )))
        }
    };
    sandbox.write_file(&path, updated.as_bytes()).await?;
    Ok(ToolOutcome::ok(format!(
        "edited {path}: {} replacement(s)",
        if a.replace_all { count } else { 1 }
    )))
}

async fn grep(
    sandbox: &Sandbox,
    a: GrepArgs,
    timeout: Duration,
    max_output: usize,
) -> crate::Result<ToolOutcome> {
    let path = guest_path(a.path.as_deref().unwrap_or(WORKSPACE_DIR));
    let mut cmd = Exec::new("grep").arg("-rnE");
    if a.ignore_case {
        cmd = cmd.arg("-i");
    }
    let out = sandbox
        .exec(
            cmd.arg("-e")
                .arg(&a.pattern)
                .arg("--")
                .arg(&path)
                .cwd(WORKSPACE_DIR)
                .timeout(timeout)
                .max_output(max_output.saturating_sub(NOTICE_ROOM)),
        )
        .await?;
    Ok(match out.status.code {
        Some(0) => ToolOutcome::ok(out.stdout_text()),
        Some(1) => ToolOutcome::ok("no matches"),
        _ => ToolOutcome::error(format!("grep failed: {}", out.stderr_text().trim())),
    })
}

async fn glob(sandbox: &Sandbox, a: GlobArgs, timeout: Duration) -> crate::Result<ToolOutcome> {
    let root = guest_path(a.path.as_deref().unwrap_or(WORKSPACE_DIR));
    let matcher = match globset::GlobBuilder::new(&a.pattern)
        .literal_separator(true)
        .build()
    {
        Ok(g) => g.compile_matcher(),
        Err(e) => return Ok(ToolOutcome::error(format!("invalid glob: {e}"))),
    };
    let out = sandbox
        .exec(
            Exec::new("find")
                .args([root.as_str(), "-type", "f"])
                .timeout(timeout)
                .max_output(MAX_GLOB_LISTING),
        )
        .await?;
    if !out.status.success() && out.stdout.is_empty() {
        return Ok(ToolOutcome::error(format!(
            "cannot list {root}: {}",
            out.stderr_text().trim()
        )));
    }
    let prefix = format!("{}/", root.trim_end_matches('/'));
    let stdout = out.stdout_text();
    let mut matches: Vec<&str> = stdout
        .lines()
        .filter(|p| matcher.is_match(p.strip_prefix(&prefix).unwrap_or(p)))
        .collect();
    matches.sort_unstable();
    let total = matches.len();
    matches.truncate(MAX_GLOB_MATCHES);
    let mut text = matches.join("\n");
    if total > MAX_GLOB_MATCHES {
        text.push_str(&format!(
            "\n[... {total} matches, first {MAX_GLOB_MATCHES} shown]"
        ));
    }
    if total == 0 {
        text = "no matches".into();
    }
    Ok(ToolOutcome::ok(text))
}

async fn ls(sandbox: &Sandbox, a: LsArgs) -> crate::Result<ToolOutcome> {
    let path = guest_path(a.path.as_deref().unwrap_or(WORKSPACE_DIR));
    let mut entries = sandbox.list(&path).await?;
    entries.sort_by(|x, y| x.name.cmp(&y.name));
    let lines: Vec<String> = entries
        .iter()
        .map(|e| match e.stat.kind {
            FileKind::Dir => format!("{}/", e.name),
            FileKind::Symlink => format!("{}@", e.name),
            _ => format!("{}\t{} bytes", e.name, e.stat.size),
        })
        .collect();
    Ok(ToolOutcome::ok(if lines.is_empty() {
        "(empty)".to_string()
    } else {
        lines.join("\n")
    }))
}

/// Cuts `text` to about `max` bytes, keeping its head and tail, with a
/// notice the model cannot miss.
pub fn truncate_output(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let head_len = floor_char_boundary(text, max * 2 / 3);
    let tail_start = ceil_char_boundary(text, text.len() - (max - head_len));
    format!(
        "{}\n[... output truncated: {} bytes omitted ...]\n{}",
        &text[..head_len],
        tail_start - head_len,
        &text[tail_start..]
    )
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// The first line of a result, for events and records.
pub fn summarize(text: &str) -> String {
    const MAX: usize = 200;
    let first = text.lines().next().unwrap_or("");
    let lines = text.lines().count();
    let mut s = if first.len() > MAX {
        format!("{}…", &first[..floor_char_boundary(first, MAX)])
    } else {
        first.to_string()
    };
    if lines > 1 {
        s.push_str(&format!(" (+{} lines)", lines - 1));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_head_and_tail_with_notice() {
        let text = "a".repeat(1000) + &"é".repeat(500) + &"z".repeat(1000);
        let cut = truncate_output(&text, 300);
        assert!(cut.starts_with("aaa"));
        assert!(cut.ends_with("zzz"));
        assert!(
            cut.contains("output truncated: 2700 bytes omitted"),
            "{cut}"
        );
        assert!(cut.len() < 400);
        assert_eq!(truncate_output("short", 300), "short");
    }

    #[test]
    fn paths_resolve_against_workspace() {
        assert_eq!(guest_path("a/b.txt"), "/workspace/a/b.txt");
        assert_eq!(guest_path("./x"), "/workspace/x");
        assert_eq!(guest_path("/tmp/y"), "/tmp/y");
    }

    #[test]
    fn summary_is_first_line_and_count() {
        assert_eq!(summarize("one\ntwo\nthree"), "one (+2 lines)");
        assert_eq!(summarize(""), "");
    }

    #[test]
    fn specs_are_valid_schemas() {
        for spec in builtin_specs() {
            assert!(BUILTIN_TOOLS.contains(&spec.name.as_str()));
            jsonschema::validator_for(&spec.input_schema).unwrap();
        }
    }
}
