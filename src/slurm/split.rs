//! How a plan becomes array tasks: for an "all models" sweep one task per model (each node
//! loads its model once), otherwise contiguous shards of items (an item — one model × profile
//! with its batch — is never split: it has one jobs-log line).

use crate::request::{Plan, Sweep};

/// Tasks a sharded plan gets when `--tasks` is not given (at most one per item).
pub const DEFAULT_TASKS: usize = 8;
/// The most array tasks one submission makes (Slurm's default `MaxArraySize` is 1001, so
/// indices 0..=1000).
pub const MAX_TASKS: usize = 1000;

/// One array task's share of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskShare {
    /// The plan's item indices it runs, in plan order.
    pub items: Vec<usize>,
    /// For people: the model (per-model tasks) or the item range.
    pub label: String,
}

/// Splits `plan` into array tasks. `tasks` is `--tasks` (sharded plans only).
///
/// # Errors
/// `--tasks` with an "all models" sweep, 0, more tasks than items, or more than
/// [`MAX_TASKS`]; a plan with no items. Messages name the flag.
pub fn split(plan: &Plan, tasks: Option<usize>) -> Result<Vec<TaskShare>, String> {
    if plan.items.is_empty() {
        return Err("the plan has no items".to_owned());
    }
    let shares = if plan.request.sweep == Sweep::AllModelsAllProfiles {
        if tasks.is_some() {
            return Err("--tasks: an all-models sweep runs one task per model; leave --tasks out"
                .to_owned());
        }
        by_model(plan)
    } else {
        let count = tasks.unwrap_or_else(|| plan.items.len().min(DEFAULT_TASKS));
        if count == 0 || count > plan.items.len() {
            return Err(format!(
                "--tasks: {count} task(s) for {} item(s); give 1 to {} (an item is never split)",
                plan.items.len(),
                plan.items.len()
            ));
        }
        shards(plan, count)
    };
    if shares.len() > MAX_TASKS {
        return Err(format!(
            "--tasks: {} array tasks is more than one submission takes ({MAX_TASKS})",
            shares.len()
        ));
    }
    Ok(shares)
}

/// One task per model, in plan order (plans are model-major, so each model's items are one
/// run).
fn by_model(plan: &Plan) -> Vec<TaskShare> {
    let mut shares: Vec<TaskShare> = Vec::new();
    let mut last_model = None;
    for item in &plan.items {
        if last_model != Some(&item.model) || shares.is_empty() {
            shares.push(TaskShare { items: Vec::new(), label: item.model.display_name.clone() });
            last_model = Some(&item.model);
        }
        if let Some(share) = shares.last_mut() {
            share.items.push(item.index);
        }
    }
    shares
}

/// `count` contiguous runs of items, sizes differing by at most one (the larger first).
fn shards(plan: &Plan, count: usize) -> Vec<TaskShare> {
    let total = plan.items.len();
    let (base, extra) = (total / count, total % count);
    let mut shares = Vec::with_capacity(count);
    let mut start = 0;
    for task in 0..count {
        let len = base + usize::from(task < extra);
        let items: Vec<usize> = plan.items[start..start + len].iter().map(|i| i.index).collect();
        let label = match (items.first(), items.last()) {
            (Some(first), Some(last)) if first != last => format!("items {first}-{last}"),
            (Some(first), _) => format!("item {first}"),
            _ => String::new(),
        };
        shares.push(TaskShare { items, label });
        start += len;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::catalog::Catalog;
    use crate::request::{Profiles, Request, build_plan};
    use chrono::TimeZone;

    fn plan(sweep: Sweep, batch: u32) -> Plan {
        let now = chrono::Local.with_ymd_and_hms(2026, 12, 3, 9, 0, 0).single().expect("time");
        let request =
            Request { prompt: "a fox".into(), sweep, batch, seed: Some(7), ..Request::default() };
        build_plan(&request, &Profiles::builtin(), &Catalog::builtin(), now, || 1).expect("plan")
    }

    #[test]
    fn an_all_models_sweep_is_one_task_per_model() {
        let plan = plan(Sweep::AllModelsAllProfiles, 1);
        let models = Catalog::builtin().sweep_models();
        let shares = split(&plan, None).expect("split");
        assert_eq!(shares.len(), models.len());
        let profiles = Profiles::builtin().all().len();
        for (share, model) in shares.iter().zip(&models) {
            assert_eq!(share.label, model.display_name);
            assert_eq!(share.items.len(), profiles);
            assert!(share.items.iter().all(|&i| plan.items[i].model == *model));
        }
        let all: Vec<usize> = shares.iter().flat_map(|s| s.items.clone()).collect();
        assert_eq!(all, (0..plan.items.len()).collect::<Vec<_>>());
        assert!(split(&plan, Some(2)).unwrap_err().starts_with("--tasks:"));
    }

    #[test]
    fn other_plans_are_balanced_contiguous_shards() {
        let plan = plan(Sweep::AllProfiles, 2);
        let n = plan.items.len();
        assert!(n > DEFAULT_TASKS, "the built-in profiles outnumber the default tasks");
        let shares = split(&plan, None).expect("split");
        assert_eq!(shares.len(), DEFAULT_TASKS);
        let sizes: Vec<usize> = shares.iter().map(|s| s.items.len()).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        let all: Vec<usize> = shares.iter().flat_map(|s| s.items.clone()).collect();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
        assert_eq!(split(&plan, Some(n)).expect("one per item").len(), n);
        assert!(split(&plan, Some(n + 1)).unwrap_err().contains("1 to"));
        assert!(split(&plan, Some(0)).is_err());
        // A plain run is one item: one task.
        let single = super::tests::plan(Sweep::None, 4);
        let shares = split(&single, None).expect("split");
        assert_eq!(shares, vec![TaskShare { items: vec![0], label: "item 0".into() }]);
    }
}
