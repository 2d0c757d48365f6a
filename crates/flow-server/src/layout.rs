//! Where each node of a flow's DAG is drawn: a layered (Sugiyama) layout by
//! the `rust-sugiyama` crate, turned left to right, with the synthetic
//! `start` and `finish` nodes Synergy drew.
//!
//! The layout depends only on the graph, so it is computed once per flow
//! (in the blocking pool) and cached by the catalog; a request only merges
//! states into it. Small flows get the crate's best settings (edge lengths
//! minimised by network simplex, transposition); large ones get its
//! linear-time ones (longest-path layering), because network simplex takes
//! minutes on a 10,000-step lattice and seconds are the budget.

use flow_core::FlowGraph;
use rust_sugiyama::configure::{Config, CrossingMinimization, RankingType};
use serde::Serialize;

/// Node box size and gaps, in SVG user units.
pub const NODE_WIDTH: f64 = 168.0;
pub const NODE_HEIGHT: f64 = 40.0;
const LAYER_GAP: f64 = 64.0;
const NODE_GAP: f64 = 16.0;
/// Synthetic nodes are drawn as small pills.
const PILL_WIDTH: f64 = 64.0;
/// Above this many nodes, the linear-time settings are used.
const SMALL: usize = 400;

/// The kind of a drawn node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Start,
    Step,
    Finish,
}

/// One drawn node: where it is, and which step it is (`index` into the
/// graph's steps; `None` for `start` and `finish`).
#[derive(Debug, Clone, Serialize)]
pub struct PlacedNode {
    pub name: String,
    pub kind: NodeKind,
    #[serde(skip)]
    pub index: Option<usize>,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    /// The layer (column), from 0 at `start`.
    pub layer: u32,
}

/// The whole drawing: nodes (start first, finish last, steps in graph
/// order between), edges as pairs of node positions in `nodes`.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub width: f64,
    pub height: f64,
    pub nodes: Vec<PlacedNode>,
    pub edges: Vec<[u32; 2]>,
}

/// Lays out `graph` left to right with `start` before every step without
/// dependencies and `finish` after every step without dependants.
pub fn layout(graph: &FlowGraph) -> Layout {
    let n = graph.len();
    let start = 0u32;
    let finish = (n + 1) as u32;
    let node_of = |step: usize| (step + 1) as u32;
    let mut edges: Vec<[u32; 2]> = Vec::with_capacity(n * 2 + 2);
    for i in 0..n {
        if graph.dependencies(i).is_empty() {
            edges.push([start, node_of(i)]);
        }
    }
    for i in 0..n {
        for &d in graph.dependants(i) {
            edges.push([node_of(i), node_of(d)]);
        }
    }
    for i in 0..n {
        if graph.dependants(i).is_empty() {
            edges.push([node_of(i), finish]);
        }
    }

    // rust-sugiyama lays out top to bottom: a vertex's "width" is its extent
    // within a layer, which left to right is the node's height.
    let vertices: Vec<(u32, (f64, f64))> = (0..=finish)
        .map(|v| (v, (NODE_HEIGHT, NODE_HEIGHT)))
        .collect();
    let pairs: Vec<(u32, u32)> = edges.iter().map(|e| (e[0], e[1])).collect();
    let small = n + 2 <= SMALL;
    let config = Config {
        minimum_length: 1,
        vertex_spacing: NODE_GAP,
        dummy_vertices: true,
        dummy_size: 1.0,
        ranking_type: if small {
            RankingType::MinimizeEdgeLength
        } else {
            RankingType::Original
        },
        c_minimization: CrossingMinimization::Barycenter,
        transpose: true,
    };
    let components = rust_sugiyama::from_vertices_and_edges(&vertices, &pairs, &config);

    // One component (start and finish join every step); stack any others
    // defensively, each below the previous.
    let mut position = vec![(0.0f64, 0.0f64, 0u32); finish as usize + 1];
    let mut offset = 0.0;
    let layer_step = NODE_HEIGHT + NODE_GAP;
    for (placed, _, _) in &components {
        let min_x = placed
            .iter()
            .map(|(_, (x, _))| *x)
            .fold(f64::INFINITY, f64::min);
        let mut max_y = 0.0f64;
        for &(v, (x, y)) in placed {
            let layer = (y / layer_step).round().max(0.0) as u32;
            let across = x - min_x + offset;
            max_y = max_y.max(across);
            if let Some(p) = position.get_mut(v) {
                *p = (f64::from(layer) * (NODE_WIDTH + LAYER_GAP), across, layer);
            }
        }
        offset = max_y + NODE_HEIGHT + NODE_GAP * 2.0;
    }

    let mut nodes = Vec::with_capacity(finish as usize + 1);
    let mut width = 0.0f64;
    let mut height = 0.0f64;
    for (v, &(x, y, layer)) in position.iter().enumerate() {
        let (name, kind, index, w) = if v == 0 {
            ("start".to_string(), NodeKind::Start, None, PILL_WIDTH)
        } else if v == finish as usize {
            ("finish".to_string(), NodeKind::Finish, None, PILL_WIDTH)
        } else {
            (
                graph.step(v - 1).name.clone(),
                NodeKind::Step,
                Some(v - 1),
                NODE_WIDTH,
            )
        };
        // Pills sit centred in their column.
        let x = if w < NODE_WIDTH {
            x + (NODE_WIDTH - w) / 2.0
        } else {
            x
        };
        width = width.max(x + w);
        height = height.max(y + NODE_HEIGHT);
        nodes.push(PlacedNode {
            name,
            kind,
            index,
            x,
            y,
            w,
            h: NODE_HEIGHT,
            layer,
        });
    }
    Layout {
        width,
        height,
        nodes,
        edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::actions::Identity;
    use flow_core::{ActionInstance, FlowDefinition, StepDefinition};
    use std::sync::Arc;

    fn graph(steps: &[(&str, &[&str])]) -> FlowGraph {
        steps
            .iter()
            .fold(FlowDefinition::new("f"), |f, (name, deps)| {
                f.step(
                    StepDefinition::new(*name, ActionInstance::new(Arc::new(Identity)))
                        .depends_on(deps.iter().copied()),
                )
            })
            .build()
            .unwrap()
    }

    #[test]
    fn a_diamond_reads_left_to_right_between_start_and_finish() {
        let g = graph(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])]);
        let l = layout(&g);
        let at = |name: &str| l.nodes.iter().find(|n| n.name == name).unwrap();
        assert_eq!(l.nodes.len(), 6);
        assert_eq!(l.nodes[0].kind, NodeKind::Start);
        assert_eq!(l.nodes[5].kind, NodeKind::Finish);
        // Every edge points right: a dependency's column is left of its
        // dependant's.
        for [from, to] in &l.edges {
            let (a, b) = (&l.nodes[*from as usize], &l.nodes[*to as usize]);
            assert!(a.layer < b.layer, "{} -> {}", a.name, b.name);
            assert!(a.x < b.x, "{} -> {}", a.name, b.name);
        }
        assert_eq!(at("b").layer, at("c").layer);
        assert!(at("b").y != at("c").y, "b and c overlap");
        assert_eq!(l.edges.len(), 1 + 4 + 1);
    }

    #[test]
    fn nodes_of_one_column_never_overlap() {
        let mut steps: Vec<(String, Vec<String>)> = vec![("root".into(), vec![])];
        for i in 0..50 {
            steps.push((format!("s{i}"), vec!["root".into()]));
        }
        let owned: Vec<(&str, Vec<&str>)> = steps
            .iter()
            .map(|(n, d)| (n.as_str(), d.iter().map(String::as_str).collect()))
            .collect();
        let borrowed: Vec<(&str, &[&str])> =
            owned.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        let l = layout(&graph(&borrowed));
        let mut ys: Vec<f64> = l
            .nodes
            .iter()
            .filter(|n| n.layer == 2)
            .map(|n| n.y)
            .collect();
        assert_eq!(ys.len(), 50);
        ys.sort_by(f64::total_cmp);
        for pair in ys.windows(2) {
            assert!(pair[1] - pair[0] >= NODE_HEIGHT, "{pair:?}");
        }
    }
}
