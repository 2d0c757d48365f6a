//! [`ActionRegistry`]: the action types a flow file may name, and how one
//! action is built from its arguments. The built-ins are registered by
//! `actions` ([`ActionRegistry::builtin`]); the flow-file parser
//! (`parser.rs`) uses the registry, never the other way round.

use super::{ActionArgs, ArgError, SpecProblem};
use crate::action::Action;
use crate::context::Settings;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use toml::Table;

/// Builds an action from its arguments.
pub type ActionFactory =
    Arc<dyn Fn(&mut ActionArgs) -> Result<Arc<dyn Action>, ArgError> + Send + Sync>;

/// The action types a flow file may name. Starts with the built-ins; library
/// users register their own.
///
/// A factory gets the action's arguments from the file ([`ActionArgs`],
/// which rejects arguments the factory did not read) and returns the
/// action:
///
/// ```
/// use async_trait::async_trait;
/// use flow_core::{Action, ActionContext, ActionError, ActionOutcome, ActionRegistry};
/// use std::path::Path;
/// use std::sync::Arc;
///
/// /// Reports "nothing to process" when the setting it names is `0`.
/// #[derive(Debug)]
/// struct CheckRows {
///     setting: String,
/// }
///
/// #[async_trait]
/// impl Action for CheckRows {
///     fn kind(&self) -> &str {
///         "check_rows"
///     }
///     async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
///         match cx.execution.settings.get(&self.setting) {
///             Some(value) if value.expose() == "0" => Ok(ActionOutcome::NothingToProcess),
///             Some(_) => Ok(ActionOutcome::Done),
///             None => Err(ActionError::failed(format!("'{}' is not set", self.setting))),
///         }
///     }
/// }
///
/// let mut registry = ActionRegistry::builtin();
/// registry.register("check_rows", |args| {
///     let setting = args.template("setting")?.source().to_string();
///     Ok(Arc::new(CheckRows { setting }) as Arc<dyn Action>)
/// });
///
/// let graph = registry.parse(
///     r#"
///     name = "rows"
///     [[steps]]
///     name = "check"
///     main = { action = "check_rows", setting = "rows" }
///     "#,
///     Path::new("rows.toml"),
/// )?;
/// assert_eq!(graph.step(0).main.action.kind(), "check_rows");
///
/// // An argument the action does not take is a load error with its place.
/// let typo = registry.parse(
///     "name = \"rows\"\n[[steps]]\nname = \"check\"\nmain = { action = \"check_rows\", setting = \"rows\", setings = 1 }\n",
///     Path::new("typo.toml"),
/// );
/// let message = typo.unwrap_err().to_string();
/// assert!(message.starts_with("typo.toml:4:"), "{message}");
/// assert!(message.contains("setings"), "{message}");
/// # Ok::<(), flow_core::SpecError>(())
/// ```
#[derive(Clone)]
pub struct ActionRegistry {
    factories: HashMap<String, ActionFactory>,
    /// When set, every action's templates are checked against these
    /// settings as the file is loaded.
    settings: Option<Arc<Settings>>,
}

impl fmt::Debug for ActionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionRegistry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl ActionRegistry {
    /// A registry with no action types.
    pub fn empty() -> Self {
        ActionRegistry {
            factories: HashMap::new(),
            settings: None,
        }
    }

    /// Checks, as files are loaded, every action's templates against
    /// `settings` (see [`Action::templates`]): a `{settings.NAME}` that is
    /// not defined, a plain value that is not shell-safe in a `shell`
    /// command, or a secret in a job's argument vector is a load error at
    /// the action's `file:line:col`, found before anything runs.
    pub fn checking_settings(mut self, settings: Arc<Settings>) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Makes `kind` available to flow files.
    pub fn register<F>(&mut self, kind: &str, factory: F)
    where
        F: Fn(&mut ActionArgs) -> Result<Arc<dyn Action>, ArgError> + Send + Sync + 'static,
    {
        self.factories.insert(kind.to_string(), Arc::new(factory));
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.factories.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }

    /// Builds one action of `kind` from `args`, rejecting unknown arguments.
    pub fn build(&self, kind: &str, args: Table) -> Result<Arc<dyn Action>, SpecProblem> {
        let factory = self
            .factories
            .get(kind)
            .ok_or_else(|| SpecProblem::UnknownAction {
                kind: kind.to_string(),
                known: self.kinds().join(", "),
            })?;
        let mut args = ActionArgs::new(args);
        match factory(&mut args) {
            Ok(action) => {
                args.finish().map_err(SpecProblem::Arg)?;
                Ok(action)
            }
            // A missing argument next to an unknown one is most likely a
            // typo: name the unknown one.
            Err(missing @ ArgError::Missing { .. }) => {
                Err(SpecProblem::Arg(args.finish().err().unwrap_or(missing)))
            }
            Err(e) => Err(SpecProblem::Arg(e)),
        }
    }

    /// The settings every action's templates are checked against as files
    /// are loaded, if any ([`ActionRegistry::checking_settings`]).
    pub(super) fn checked_settings(&self) -> Option<&Arc<Settings>> {
        self.settings.as_ref()
    }
}
