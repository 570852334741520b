//! Checking a workflow's dependency graph before anything runs.

use std::collections::HashMap;

use petgraph::algo::tarjan_scc;
use petgraph::graphmap::DiGraphMap;

/// Checks names, dependencies and cycles. `steps` is `(name, depends_on)`
/// in declaration order. Errors name the steps involved.
pub fn validate(steps: &[(&str, &[String])]) -> Result<(), String> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, (name, _)) in steps.iter().enumerate() {
        if name.is_empty() {
            return Err(format!("step #{} has no name", i + 1));
        }
        if index.insert(name, i).is_some() {
            return Err(format!("two steps are named `{name}`"));
        }
    }
    let mut graph = DiGraphMap::<usize, ()>::new();
    for (i, (name, deps)) in steps.iter().enumerate() {
        graph.add_node(i);
        for dep in deps.iter() {
            let Some(&d) = index.get(dep.as_str()) else {
                return Err(format!("step `{name}` depends on unknown step `{dep}`"));
            };
            if d == i {
                return Err(format!("step `{name}` depends on itself"));
            }
            graph.add_edge(d, i, ());
        }
    }
    for component in tarjan_scc(&graph) {
        if component.len() > 1 {
            let mut names: Vec<&str> = component.iter().map(|&i| steps[i].0).collect();
            names.sort_unstable();
            return Err(format!(
                "dependency cycle between steps {}",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_unknown_dependencies_and_cycles() {
        let (a, b, c) = (deps(&[]), deps(&["a", "c"]), deps(&["b"]));
        let err = validate(&[("a", &a), ("b", &b), ("c", &c)]).unwrap_err();
        assert_eq!(err, "dependency cycle between steps `b`, `c`");
        let x = deps(&["x"]);
        let err = validate(&[("a", &a), ("b", &x)]).unwrap_err();
        assert_eq!(err, "step `b` depends on unknown step `x`");
        let own = deps(&["a"]);
        assert!(validate(&[("a", &own)]).unwrap_err().contains("itself"));
        assert!(validate(&[("a", &a), ("a", &a)])
            .unwrap_err()
            .contains("two steps"));
        let d = deps(&["a"]);
        assert!(validate(&[("a", &a), ("b", &d), ("c", &d)]).is_ok());
    }
}
