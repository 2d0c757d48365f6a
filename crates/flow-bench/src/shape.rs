//! The benchmark shapes: their names, sizes and dependencies, as a
//! [`FlowDefinition`] for the engine or as a flow file for the loader.

use flow_core::actions::Identity;
use flow_core::{ActionInstance, FlowDefinition, StepDefinition, TimeQualifier};
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::Arc;

/// The shapes `flow-bench` runs when none is named, in order.
pub const DEFAULT_SHAPES: [&str; 16] = [
    "chain-1000",
    "signals-chain-1000",
    "signals-single-chain-1000",
    "recorded-chain-1000",
    "mongo-chain-1000",
    "mongo-crowded-chain-1000",
    "fanout-1000",
    "fanout-10000",
    "lattice-100x100",
    "load-100000",
    "cli-version",
    "cli-validate",
    "catchup-1000",
    "tick-100000",
    "due-start",
    "dataproc-slots-25",
];

/// How many other step documents `mongo-crowded-chain-N`'s database holds.
pub const CROWD: usize = 100_000;

/// One benchmark. Sizes are part of the name, so a smaller one can be run
/// for profiling (`--shape chain-200`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `chain-N`: step i depends on step i-1.
    Chain(usize),
    /// `recorded-chain-N`: the chain with every log line also recorded in
    /// the store (the other shapes record none, so their figures stay
    /// comparable across versions).
    RecordedChain(usize),
    /// `signals-chain-N`: the chain with every signal exporter `flow` has
    /// on, posting to a loopback receiver ([`crate::signals`]), lineage
    /// events in batches (`[lineage] batch`); `signals-single-chain-N`:
    /// the same with one lineage event per request (Marquez's way).
    SignalsChain {
        /// Steps.
        steps: usize,
        /// Whether lineage events go in batches.
        batched: bool,
    },
    /// `fanout-N`: a root, N-2 leaves that depend on it, and a sink that
    /// depends on every leaf.
    Fanout(usize),
    /// `lattice-WxL`: L layers of W steps; step j of layer i depends on
    /// steps j and (j+1) mod W of layer i-1.
    Lattice {
        /// Steps per layer.
        width: usize,
        /// Layers.
        layers: usize,
    },
    /// `load-N`: a flow file of N identity steps, parsed and validated.
    Load(usize),
    /// `mongo-chain-N`: the chain on the MongoDB store, on a fresh
    /// database; `mongo-crowded-chain-N`: on one already holding
    /// [`CROWD`] step documents of the same flow's other timeperiods (its
    /// history), so a per-step operation that misses an index costs more.
    /// Run on each server given with `--mongo NAME=URI`.
    MongoChain {
        /// Steps.
        steps: usize,
        /// Whether the database holds [`CROWD`] other step documents.
        crowded: bool,
    },
    /// `catchup-N`: `flow schedule` catching up N missed hourly periods
    /// of a 10-step flow, 8 runs at a time ([`crate::schedule`]).
    Catchup(usize),
    /// `tick-N`: the timetable's tick with N finished Jobs against none.
    Tick(usize),
    /// `due-start`: how long after a period is due its run starts.
    DueStart,
    /// `dataproc-slots-N`: N jobs at once on one Dataproc cluster with N
    /// slots, on the contract fake and a manual clock ([`crate::slots`]).
    DataprocSlots(usize),
    /// `cli-version`: `flow --version`.
    CliVersion,
    /// `cli-validate`: `flow validate FILE` of a small file.
    CliValidate,
}

impl FromStr for Shape {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "unknown shape '{text}': use chain-N, recorded-chain-N, signals-chain-N, signals-single-chain-N, mongo-chain-N, mongo-crowded-chain-N, fanout-N, lattice-WxL, load-N, dataproc-slots-N, catchup-N, tick-N, due-start, cli-version or cli-validate"
            )
        };
        let number = |s: &str| s.parse::<usize>().map_err(|_| bad());
        let shape = match text.split_once('-') {
            Some(("cli", "version")) => Shape::CliVersion,
            Some(("cli", "validate")) => Shape::CliValidate,
            Some(("due", "start")) => Shape::DueStart,
            Some(("catchup", n)) => Shape::Catchup(number(n)?),
            Some(("tick", n)) => Shape::Tick(number(n)?),
            Some(("chain", n)) => Shape::Chain(number(n)?),
            Some(("recorded", rest)) => match rest.split_once('-') {
                Some(("chain", n)) => Shape::RecordedChain(number(n)?),
                _ => return Err(bad()),
            },
            Some(("signals", rest)) => match rest.split_once('-') {
                Some(("chain", n)) => Shape::SignalsChain {
                    steps: number(n)?,
                    batched: true,
                },
                Some(("single", rest)) => match rest.split_once('-') {
                    Some(("chain", n)) => Shape::SignalsChain {
                        steps: number(n)?,
                        batched: false,
                    },
                    _ => return Err(bad()),
                },
                _ => return Err(bad()),
            },
            Some(("mongo", rest)) => match rest.split_once('-') {
                Some(("chain", n)) => Shape::MongoChain {
                    steps: number(n)?,
                    crowded: false,
                },
                Some(("crowded", rest)) => match rest.split_once('-') {
                    Some(("chain", n)) => Shape::MongoChain {
                        steps: number(n)?,
                        crowded: true,
                    },
                    _ => return Err(bad()),
                },
                _ => return Err(bad()),
            },
            Some(("fanout", n)) => Shape::Fanout(number(n)?),
            Some(("dataproc", rest)) => match rest.split_once('-') {
                Some(("slots", n)) => Shape::DataprocSlots(number(n)?),
                _ => return Err(bad()),
            },
            Some(("load", n)) => Shape::Load(number(n)?),
            Some(("lattice", wl)) => {
                let (w, l) = wl.split_once('x').ok_or_else(bad)?;
                Shape::Lattice {
                    width: number(w)?,
                    layers: number(l)?,
                }
            }
            _ => return Err(bad()),
        };
        let too_small = match shape {
            Shape::Chain(n)
            | Shape::RecordedChain(n)
            | Shape::SignalsChain { steps: n, .. }
            | Shape::Load(n)
            | Shape::MongoChain { steps: n, .. }
            | Shape::Catchup(n)
            | Shape::DataprocSlots(n) => n < 1,
            Shape::Tick(_) | Shape::DueStart => false,
            Shape::Fanout(n) => n < 3,
            Shape::Lattice { width, layers } => width < 2 || layers < 1,
            Shape::CliVersion | Shape::CliValidate => false,
        };
        if too_small {
            return Err(format!("shape '{text}' is too small"));
        }
        Ok(shape)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Chain(n) => write!(f, "chain-{n}"),
            Shape::RecordedChain(n) => write!(f, "recorded-chain-{n}"),
            Shape::SignalsChain { steps, batched } => {
                let single = if *batched { "" } else { "single-" };
                write!(f, "signals-{single}chain-{steps}")
            }
            Shape::MongoChain {
                steps,
                crowded: false,
            } => write!(f, "mongo-chain-{steps}"),
            Shape::MongoChain {
                steps,
                crowded: true,
            } => write!(f, "mongo-crowded-chain-{steps}"),
            Shape::Fanout(n) => write!(f, "fanout-{n}"),
            Shape::Lattice { width, layers } => write!(f, "lattice-{width}x{layers}"),
            Shape::Load(n) => write!(f, "load-{n}"),
            Shape::Catchup(n) => write!(f, "catchup-{n}"),
            Shape::Tick(n) => write!(f, "tick-{n}"),
            Shape::DueStart => f.write_str("due-start"),
            Shape::DataprocSlots(n) => write!(f, "dataproc-slots-{n}"),
            Shape::CliVersion => f.write_str("cli-version"),
            Shape::CliValidate => f.write_str("cli-validate"),
        }
    }
}

impl Shape {
    /// How many steps the shape has (0 for the CLI shapes).
    pub fn len(&self) -> usize {
        match *self {
            Shape::Chain(n)
            | Shape::RecordedChain(n)
            | Shape::SignalsChain { steps: n, .. }
            | Shape::Fanout(n)
            | Shape::Load(n)
            | Shape::DataprocSlots(n)
            | Shape::MongoChain { steps: n, .. } => n,
            Shape::Lattice { width, layers } => width * layers,
            Shape::Catchup(n) => n * crate::schedule::STEPS,
            Shape::Tick(_) | Shape::DueStart | Shape::CliVersion | Shape::CliValidate => 0,
        }
    }

    /// True for the CLI shapes, which have no steps.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True for the shapes the engine runs.
    pub fn runs_engine(&self) -> bool {
        matches!(
            self,
            Shape::Chain(_)
                | Shape::RecordedChain(_)
                | Shape::SignalsChain { .. }
                | Shape::MongoChain { .. }
                | Shape::Fanout(_)
                | Shape::Lattice { .. }
        )
    }

    /// Clusters used unless `--clusters` says otherwise: 1 for the chain
    /// (it is serial), 8 for the fan-out and the lattice, 0 where the engine
    /// does not run.
    pub fn default_clusters(&self) -> usize {
        match self {
            Shape::Chain(_)
            | Shape::RecordedChain(_)
            | Shape::SignalsChain { .. }
            | Shape::MongoChain { .. } => 1,
            Shape::Fanout(_) | Shape::Lattice { .. } => 8,
            _ => 0,
        }
    }

    /// The steps that step `i` depends on, all lower than `i`.
    pub fn dependencies_of(&self, i: usize) -> Vec<usize> {
        match *self {
            Shape::Chain(_)
            | Shape::RecordedChain(_)
            | Shape::SignalsChain { .. }
            | Shape::MongoChain { .. } => i.checked_sub(1).into_iter().collect(),
            Shape::Fanout(n) => match i {
                0 => Vec::new(),
                i if i == n - 1 => (1..n - 1).collect(),
                _ => vec![0],
            },
            Shape::Lattice { width, .. } => {
                if i < width {
                    return Vec::new();
                }
                let (layer, j) = (i / width, i % width);
                let previous = (layer - 1) * width;
                vec![previous + j, previous + (j + 1) % width]
            }
            Shape::Load(_) => {
                // Mixed: even steps follow their predecessor, odd ones reach
                // back to a scattered earlier step; every third step also
                // depends on the step halfway back.
                if i == 0 {
                    return Vec::new();
                }
                let scattered = ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % i;
                let first = if i.is_multiple_of(2) {
                    i - 1
                } else {
                    scattered
                };
                let mut deps = vec![first];
                if i.is_multiple_of(3) && i / 2 != first {
                    deps.push(i / 2);
                }
                deps
            }
            Shape::Catchup(_)
            | Shape::Tick(_)
            | Shape::DueStart
            | Shape::DataprocSlots(_)
            | Shape::CliVersion
            | Shape::CliValidate => Vec::new(),
        }
    }

    /// The engine flow: every step runs one `identity` action.
    pub fn definition(&self) -> FlowDefinition {
        let identity = ActionInstance::new(Arc::new(Identity));
        (0..self.len()).fold(
            FlowDefinition::new(self.flow_name()).time_qualifier(TimeQualifier::Daily),
            |flow, i| {
                flow.step(
                    StepDefinition::new(step_name(i), identity.clone())
                        .depends_on(self.dependencies_of(i).into_iter().map(step_name)),
                )
            },
        )
    }

    /// Writes the shape as a flow file of identity steps.
    pub fn write_flow_file(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "name = \"{}\"", self.flow_name())?;
        writeln!(out, "time_qualifier = \"daily\"")?;
        writeln!(out, "description = \"generated by flow-bench\"")?;
        for i in 0..self.len() {
            writeln!(out, "\n[[steps]]\nname = \"{}\"", step_name(i))?;
            let deps = self.dependencies_of(i);
            if !deps.is_empty() {
                let names: Vec<String> = deps
                    .into_iter()
                    .map(|d| format!("\"{}\"", step_name(d)))
                    .collect();
                writeln!(out, "depends_on = [{}]", names.join(", "))?;
            }
            writeln!(out, "main = {{ action = \"identity\" }}")?;
        }
        Ok(())
    }

    /// The flow's name: the shape's name with `_` for `-`.
    pub fn flow_name(&self) -> String {
        self.to_string().replace('-', "_")
    }
}

/// Step `i`'s name.
pub fn step_name(i: usize) -> String {
    format!("s{i:06}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::ActionRegistry;
    use std::path::Path;

    #[test]
    fn names_round_trip() {
        for name in DEFAULT_SHAPES {
            assert_eq!(name.parse::<Shape>().unwrap().to_string(), name);
        }
        assert_eq!(
            "lattice-3x4".parse::<Shape>().unwrap(),
            Shape::Lattice {
                width: 3,
                layers: 4
            }
        );
        assert_eq!(
            "mongo-crowded-chain-7".parse::<Shape>().unwrap(),
            Shape::MongoChain {
                steps: 7,
                crowded: true
            }
        );
        assert!("mongo-fanout-7".parse::<Shape>().is_err());
        assert!("chain-x".parse::<Shape>().is_err());
        assert!("fanout-2".parse::<Shape>().is_err());
        assert!("ring-5".parse::<Shape>().is_err());
    }

    #[test]
    fn graphs_have_the_promised_edges() {
        let fanout = Shape::Fanout(6).definition().build().unwrap();
        assert_eq!(fanout.len(), 6);
        assert_eq!(fanout.dependants(0).len(), 4);
        assert_eq!(fanout.dependencies(5), &[1, 2, 3, 4]);

        let lattice = Shape::Lattice {
            width: 4,
            layers: 3,
        }
        .definition()
        .build()
        .unwrap();
        assert_eq!(lattice.len(), 12);
        // Layer 1, step 3 depends on steps 3 and 0 of layer 0.
        assert_eq!(lattice.dependencies(7), &[3, 0]);
        assert!(lattice.dependencies(2).is_empty());

        let chain = Shape::Chain(5).definition().build().unwrap();
        assert_eq!(chain.topological_order(), &[0, 1, 2, 3, 4]);
    }

    #[test]
    fn load_file_parses_and_validates() {
        let shape = Shape::Load(500);
        let mut text = Vec::new();
        shape.write_flow_file(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        let graph = ActionRegistry::builtin()
            .parse(&text, Path::new("load.toml"))
            .unwrap();
        assert_eq!(graph.len(), 500);
        assert!((1..500).all(|i| !graph.dependencies(i).is_empty()));
        assert!((1..500).any(|i| graph.dependencies(i).len() == 2));
    }
}
