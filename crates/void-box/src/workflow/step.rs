//! A workflow step: a command in a sandbox, or an agent box.

use std::time::Duration;

use crate::agent::VoidBox;
use crate::SandboxConfig;

/// What a step does.
#[derive(Debug, Clone)]
pub enum StepAction {
    /// A command in a fresh sandbox.
    Command(Box<CommandStep>),
    /// An agent box, in a fresh sandbox of its own configuration.
    Agent(VoidBox),
}

/// A command step.
#[derive(Debug, Clone)]
pub struct CommandStep {
    /// Program (looked up in the guest's `PATH`).
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Whose stdout becomes stdin (default: the only dependency's, if one).
    pub stdin_from: Option<String>,
    /// The sandbox it runs in.
    pub sandbox: SandboxConfig,
}

/// How long one attempt of a step may take unless it says otherwise:
/// every wait has a deadline, even for a command that never ends.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// One node of a workflow.
#[derive(Debug, Clone)]
pub struct Step {
    pub(crate) name: String,
    pub(crate) action: StepAction,
    pub(crate) depends_on: Vec<String>,
    pub(crate) outputs: Vec<String>,
    pub(crate) retries: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) timeout: Option<Duration>,
}

impl Step {
    fn new(name: &str, action: StepAction) -> Step {
        Step {
            name: name.into(),
            action,
            depends_on: Vec::new(),
            outputs: Vec::new(),
            retries: 0,
            retry_backoff: Duration::from_secs(1),
            timeout: Some(DEFAULT_STEP_TIMEOUT),
        }
    }

    /// Runs `program args..` in a fresh sandbox.
    pub fn command<I, S>(name: &str, program: &str, args: I) -> Step
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Step::new(
            name,
            StepAction::Command(Box::new(CommandStep {
                program: program.into(),
                args: args.into_iter().map(Into::into).collect(),
                stdin_from: None,
                sandbox: SandboxConfig::default(),
            })),
        )
    }

    /// Runs `script` with `sh -c` in a fresh sandbox.
    pub fn shell(name: &str, script: &str) -> Step {
        Step::command(name, "sh", ["-c", script])
    }

    /// Runs an agent box.
    pub fn agent(name: &str, vbox: VoidBox) -> Step {
        Step::new(name, StepAction::Agent(vbox))
    }

    /// Runs after these steps and receives their outputs.
    pub fn depends_on<I, S>(mut self, steps: I) -> Step
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depends_on.extend(steps.into_iter().map(Into::into));
        self
    }

    /// A file this step writes (relative paths are under `/workspace`);
    /// dependents find it at the same path.
    pub fn output(mut self, path: &str) -> Step {
        self.outputs.push(crate::agent::tools::guest_path(path));
        self
    }

    /// Retries after a failure (default 0), with exponential backoff.
    pub fn retries(mut self, retries: u32) -> Step {
        self.retries = retries;
        self
    }

    /// First wait before a retry (default 1 s, doubling).
    pub fn retry_backoff(mut self, backoff: Duration) -> Step {
        self.retry_backoff = backoff;
        self
    }

    /// Deadline of one attempt, boot included (default 30 minutes).
    pub fn timeout(mut self, timeout: Duration) -> Step {
        self.timeout = Some(timeout);
        self
    }

    /// For a command step: whose stdout becomes stdin.
    pub fn stdin_from(mut self, step: &str) -> Step {
        if let StepAction::Command(c) = &mut self.action {
            c.stdin_from = Some(step.into());
        }
        self
    }

    /// For a command step: the sandbox to run in.
    pub fn sandbox(mut self, config: SandboxConfig) -> Step {
        if let StepAction::Command(c) = &mut self.action {
            c.sandbox = config;
        }
        self
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it does.
    pub fn action(&self) -> &StepAction {
        &self.action
    }

    /// Its dependencies.
    pub fn dependencies(&self) -> &[String] {
        &self.depends_on
    }
}
