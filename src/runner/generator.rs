//! The prompt generator: job number `n` of a run → template, prompt, negative prompt, model,
//! profile and seed, the same for the same file and `--seed` on any machine.
//!
//! Draws, in this order, from job `n`'s own generator ([`Prng::for_job`]): the template (by
//! weight), the prompt's pieces left to right (depth first), the negative prompt's pieces,
//! the model (uniform over the template's models), the profile (likewise), and — under the
//! `Random` seed policy only — a 32-bit seed. Expanded text is tidied: runs of whitespace
//! become one space, and the comma-separated parts are trimmed with empty ones dropped (so
//! `"a fox, {|at night}"` never ends in a stray comma).

use serde::Serialize;

use super::prng::Prng;
use super::templates::{Piece, SeedPolicy, TemplateSet};
use crate::models::catalog::{Catalog, DEFAULT_MODEL};
use crate::request::{Profiles, RequestError};
use crate::vocab::RAW_PROFILE;

/// One generated job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeneratedJob {
    /// Runner job number, from 1.
    pub number: u64,
    /// The template's name.
    pub template: String,
    /// The prompt (before the profile's suffix).
    pub prompt: String,
    /// The negative prompt (before the profile's suffix).
    pub negative: String,
    /// Model key (catalog name, hub id or path) as the file or `--models` wrote it.
    pub model: String,
    /// Style profile name.
    pub profile: String,
    /// Base seed.
    pub seed: u64,
}

/// What the runner's flags allow: `--models` and `--profiles` (empty: no restriction).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunChoices {
    /// Model keys.
    pub models: Vec<String>,
    /// Profile names.
    pub profiles: Vec<String>,
}

/// A template that can run, with its models, profiles, negative and seeds settled.
#[derive(Debug, Clone)]
struct Eligible {
    template: usize,
    models: Vec<String>,
    profiles: Vec<String>,
    seeds: SeedPolicy,
}

/// Makes jobs from a template set.
#[derive(Debug, Clone)]
pub struct Generator {
    set: TemplateSet,
    run_seed: u64,
    eligible: Vec<Eligible>,
    weights: Vec<f64>,
    notes: Vec<String>,
}

/// The models a template may use: its own (else the file's) narrowed to the run's, or the
/// run's when it names none, or `default`.
fn effective(
    own: &[String],
    file: &[String],
    run: &[String],
    default: &str,
    same: impl Fn(&str, &str) -> bool,
) -> Vec<String> {
    let own = if own.is_empty() { file } else { own };
    match (own.is_empty(), run.is_empty()) {
        (true, true) => vec![default.to_owned()],
        (true, false) => run.to_vec(),
        (false, true) => own.to_vec(),
        (false, false) => {
            own.iter().filter(|name| run.iter().any(|r| same(name, r))).cloned().collect()
        }
    }
}

impl Generator {
    /// Checks `choices` and settles every template's models and profiles. Templates left with
    /// none (their models are not among `--models`) are skipped, with a note.
    ///
    /// # Errors
    /// An unknown `--models` / `--profiles` name, or no template left to run.
    pub fn new(
        set: TemplateSet,
        run_seed: u64,
        choices: &RunChoices,
        profiles: &Profiles,
        catalog: &Catalog,
    ) -> Result<Self, RequestError> {
        let mut run_profiles = Vec::new();
        for name in &choices.profiles {
            let profile = profiles.get(name).ok_or_else(|| {
                RequestError::new(
                    "profiles",
                    format!("unknown profile {name:?}; valid: {}", profiles.names().join(", ")),
                )
            })?;
            run_profiles.push(profile.name.clone());
        }
        for key in &choices.models {
            catalog.resolve(key).map_err(|err| RequestError::new("models", err.to_string()))?;
        }
        let same_model = |a: &str, b: &str| match (catalog.resolve(a), catalog.resolve(b)) {
            (Ok(a), Ok(b)) => a.display_name.eq_ignore_ascii_case(&b.display_name),
            _ => false,
        };
        let canonical =
            |name: &String| profiles.get(name).map_or_else(|| name.clone(), |p| p.name.clone());
        let mut eligible = Vec::new();
        let mut notes = Vec::new();
        for (index, template) in set.templates.iter().enumerate() {
            let models = effective(
                &template.models,
                &set.models,
                &choices.models,
                DEFAULT_MODEL,
                same_model,
            );
            let own_profiles: Vec<String> = template.profiles.iter().map(canonical).collect();
            let file_profiles: Vec<String> = set.profiles.iter().map(canonical).collect();
            let profiles_for =
                effective(&own_profiles, &file_profiles, &run_profiles, RAW_PROFILE, |a, b| {
                    a.eq_ignore_ascii_case(b)
                });
            if models.is_empty() || profiles_for.is_empty() {
                let what = if models.is_empty() { "--models" } else { "--profiles" };
                notes.push(format!(
                    "template {:?} skipped: none of its {} is among {what}",
                    template.name,
                    if models.is_empty() { "models" } else { "profiles" }
                ));
                continue;
            }
            eligible.push(Eligible {
                template: index,
                models,
                profiles: profiles_for,
                seeds: template.seeds.unwrap_or(set.seeds),
            });
        }
        if eligible.is_empty() {
            return Err(RequestError::new(
                "templates",
                format!(
                    "no template of {} can run with these --models/--profiles ({})",
                    set.file,
                    notes.join("; ")
                ),
            ));
        }
        let weights = eligible.iter().map(|e| set.templates[e.template].weight).collect();
        Ok(Self { set, run_seed, eligible, weights, notes })
    }

    /// What the user should know (skipped templates).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The template set.
    pub fn templates(&self) -> &TemplateSet {
        &self.set
    }

    /// The run seed.
    pub fn run_seed(&self) -> u64 {
        self.run_seed
    }

    /// Job `number` (from 1).
    pub fn job(&self, number: u64) -> GeneratedJob {
        self.job_traced(number, &mut |_, _| {})
    }

    /// Job `number`, calling `trace(list, entry index)` for every list entry drawn (the
    /// statistics tests count them).
    pub fn job_traced(&self, number: u64, trace: &mut dyn FnMut(&str, usize)) -> GeneratedJob {
        let mut rng = Prng::for_job(self.run_seed, number);
        let eligible = &self.eligible[rng.weighted(&self.weights)];
        let template = &self.set.templates[eligible.template];
        let mut prompt = String::new();
        self.expand(&template.pieces, &mut rng, &mut prompt, trace);
        let mut negative = String::new();
        if let Some((_, pieces)) = template.negative.as_ref().or(self.set.negative.as_ref()) {
            self.expand(pieces, &mut rng, &mut negative, trace);
        }
        let model = pick(&eligible.models, &mut rng);
        let profile = pick(&eligible.profiles, &mut rng);
        let seed = match eligible.seeds {
            SeedPolicy::Random => u64::from(rng.next_u32()),
            SeedPolicy::Fixed(seed) => seed,
            SeedPolicy::Sequential(first) => first.wrapping_add(number.saturating_sub(1)),
        };
        GeneratedJob {
            number,
            template: template.name.clone(),
            prompt: tidy(&prompt),
            negative: tidy(&negative),
            model,
            profile,
            seed,
        }
    }

    fn expand(
        &self,
        pieces: &[Piece],
        rng: &mut Prng,
        out: &mut String,
        trace: &mut dyn FnMut(&str, usize),
    ) {
        for piece in pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Slot { name, .. } => {
                    // Checked when the file was read: every slot names a list.
                    if let Some(list) = self.set.list(name) {
                        let weights: Vec<f64> = list.entries.iter().map(|e| e.weight).collect();
                        let index = rng.weighted(&weights);
                        trace(name, index);
                        self.expand(&list.entries[index].pieces, rng, out, trace);
                    }
                }
                Piece::Choice { weights, variants } => {
                    self.expand(&variants[rng.weighted(weights)], rng, out, trace);
                }
            }
        }
    }
}

fn pick(options: &[String], rng: &mut Prng) -> String {
    let index = usize::try_from(rng.below(options.len() as u64)).unwrap_or(0);
    options.get(index).cloned().unwrap_or_default()
}

/// Whitespace runs → one space; comma-separated parts trimmed, empty ones dropped.
pub fn tidy(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::templates::Format;

    fn set(text: &str) -> TemplateSet {
        TemplateSet::parse(text, "test.ron", Format::Ron, &Profiles::builtin(), &Catalog::builtin())
            .expect("valid")
    }

    fn generator(text: &str, seed: u64, choices: &RunChoices) -> Generator {
        Generator::new(set(text), seed, choices, &Profiles::builtin(), &Catalog::builtin())
            .expect("generator")
    }

    const COLORS: &str = r#"(
        lists: { "color": ["red", "3::blue", "green"], "animal": ["cat", "a {color} dog"] },
        templates: [
            (name: "one", text: "a {color} {animal}, {big|2::small}", weight: 1.0),
            (name: "three", text: "{animal} at night", weight: 3.0, seeds: Sequential(100)),
        ],
    )"#;

    /// Within 5 standard deviations of a binomial count.
    fn assert_near(count: usize, trials: usize, p: f64, what: &str) {
        let expected = trials as f64 * p;
        let sigma = (trials as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (count as f64 - expected).abs() < 5.0 * sigma,
            "{what}: {count} of {trials}, expected {expected:.0} ± {:.0}",
            5.0 * sigma
        );
    }

    #[test]
    fn weights_are_respected_over_10_000_prompts() {
        let generator = generator(COLORS, 7, &RunChoices::default());
        let mut colors = [0usize; 3];
        let mut templates = [0usize; 2];
        let mut sizes = [0usize; 2];
        for number in 1..=10_000 {
            let job = generator.job_traced(number, &mut |list, index| {
                if list == "color" {
                    colors[index] += 1;
                }
            });
            if job.template == "one" {
                templates[0] += 1;
                sizes[usize::from(job.prompt.ends_with("small"))] += 1;
                assert!(job.prompt.ends_with("big") || job.prompt.ends_with("small"));
            } else {
                templates[1] += 1;
                assert_eq!(job.seed, 100 + number - 1, "sequential seeds");
            }
            assert!(!job.prompt.contains('{'), "{}", job.prompt);
        }
        assert_near(templates[0], 10_000, 0.25, "template weight 1 of 4");
        assert_near(sizes[1], templates[0], 2.0 / 3.0, "choice weight 2 of 3");
        let drawn: usize = colors.iter().sum();
        assert_near(colors[1], drawn, 0.6, "entry weight 3 of 5");
        assert_near(colors[0], drawn, 0.2, "entry weight 1 of 5");
    }

    #[test]
    fn every_value_of_the_builtin_file_appears_in_10_000_prompts() {
        let profiles = Profiles::builtin();
        let catalog = Catalog::builtin();
        let builtin = TemplateSet::builtin(&profiles, &catalog).expect("the shipped file is valid");
        assert!(builtin.templates.len() >= 12, "a rich file");
        assert!(builtin.combinations() > 1_000_000, "{}", builtin.combinations());
        let generator =
            Generator::new(builtin.clone(), 1, &RunChoices::default(), &profiles, &catalog)
                .expect("generator");
        let mut seen: std::collections::HashSet<(String, usize)> = std::collections::HashSet::new();
        let mut templates = std::collections::HashSet::new();
        let mut used_profiles = std::collections::HashSet::new();
        for number in 1..=10_000 {
            let job = generator.job_traced(number, &mut |list, index| {
                seen.insert((list.to_owned(), index));
            });
            assert!(!job.prompt.is_empty() && !job.prompt.contains(['{', '}']), "{job:?}");
            assert!(!job.negative.is_empty());
            assert_eq!(job.model, DEFAULT_MODEL);
            templates.insert(job.template);
            used_profiles.insert(job.profile);
        }
        for list in &builtin.lists {
            for (index, entry) in list.entries.iter().enumerate() {
                assert!(
                    seen.contains(&(list.name.clone(), index)),
                    "{} never drew {:?}",
                    list.name,
                    entry.text
                );
            }
        }
        assert_eq!(templates.len(), builtin.templates.len());
        let named: std::collections::HashSet<&String> =
            builtin.templates.iter().flat_map(|t| &t.profiles).collect();
        assert_eq!(used_profiles.len(), named.len());
    }

    #[test]
    fn same_seed_same_jobs_on_any_machine() {
        let a = generator(COLORS, 42, &RunChoices::default());
        let b = generator(COLORS, 42, &RunChoices::default());
        let jobs: Vec<GeneratedJob> = (1..=50).map(|n| a.job(n)).collect();
        assert_eq!(jobs, (1..=50).map(|n| b.job(n)).collect::<Vec<_>>());
        // Job 7 does not depend on the jobs before it.
        assert_eq!(b.job(7), jobs[6]);
        let other = generator(COLORS, 43, &RunChoices::default());
        assert_ne!(jobs, (1..=50).map(|n| other.job(n)).collect::<Vec<_>>());
        // Pinned: the PRNG is ours, so these never change with a crate version.
        let pinned: Vec<(String, String, u64)> =
            jobs.iter().take(6).map(|j| (j.template.clone(), j.prompt.clone(), j.seed)).collect();
        let expected = [
            ("three", "cat at night", 100),
            ("three", "a blue dog at night", 101),
            ("three", "cat at night", 102),
            ("three", "cat at night", 103),
            ("one", "a green cat, small", 1_422_387_299),
            ("three", "a red dog at night", 105),
        ];
        let expected: Vec<(String, String, u64)> =
            expected.iter().map(|(t, p, s)| ((*t).to_owned(), (*p).to_owned(), *s)).collect();
        assert_eq!(pinned, expected);
    }

    #[test]
    fn run_choices_narrow_or_supply_models_and_profiles() {
        let text = r#"(
            lists: {},
            templates: [
                (name: "turbo", text: "a", models: ["SDXL Turbo"], profiles: ["Watercolor", "Cinematic"]),
                (name: "free", text: "b"),
            ],
        )"#;
        let choices = RunChoices {
            models: vec!["sdxl base 1.0".into(), "DreamShaper XL".into()],
            profiles: vec!["cinematic".into()],
        };
        let narrowed = generator(text, 1, &choices);
        assert_eq!(
            narrowed.notes().len(),
            1,
            "turbo is not among --models: {:?}",
            narrowed.notes()
        );
        for number in 1..=50 {
            let job = narrowed.job(number);
            assert_eq!(job.template, "free");
            assert!(choices.models.contains(&job.model), "{}", job.model);
            assert_eq!(job.profile, "Cinematic", "canonical profile name");
        }
        let only_turbo = RunChoices { models: vec!["SDXL Turbo".into()], ..RunChoices::default() };
        let turbo = generator(text, 1, &only_turbo);
        let profiles: std::collections::HashSet<String> = (1..=50)
            .map(|n| turbo.job(n))
            .filter(|j| j.template == "turbo")
            .map(|j| j.profile)
            .collect();
        assert_eq!(profiles.len(), 2);
        let err = Generator::new(
            set(text),
            1,
            &RunChoices { profiles: vec!["Nope".into()], ..RunChoices::default() },
            &Profiles::builtin(),
            &Catalog::builtin(),
        )
        .expect_err("unknown profile");
        assert_eq!(err.field, "profiles");
    }

    #[test]
    fn tidy_drops_empty_parts() {
        assert_eq!(tidy("a fox ,  , at   night, "), "a fox, at night");
        assert_eq!(tidy(""), "");
    }
}
