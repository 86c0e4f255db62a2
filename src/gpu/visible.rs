//! `CUDA_VISIBLE_DEVICES`: which GPUs this process's CUDA sees, and under which ordinal.
//!
//! NVML and `nvidia-smi` number every GPU of the machine in PCI bus order and ignore the
//! variable; CUDA numbers only the listed ones, in list order. CUDA's rules, as its
//! programming guide states them: entries are indices or UUIDs (`GPU-…`, a unique prefix is
//! enough); the list ends at the first entry that names no device; an empty value hides every
//! GPU; unset shows all. With `CUDA_DEVICE_ORDER` unset CUDA orders "fastest first", which can
//! differ from the PCI order NVML uses when the GPUs differ; `PCI_BUS_ID` makes them agree.

use super::GpuInfo;

/// The process's view of the GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Visibility {
    /// `CUDA_VISIBLE_DEVICES` as set (`None` when unset).
    pub visible_devices: Option<String>,
    /// `CUDA_DEVICE_ORDER` as set.
    pub device_order: Option<String>,
}

impl Visibility {
    /// A view from the two variables' values.
    pub fn new(visible_devices: Option<String>, device_order: Option<String>) -> Self {
        Self { visible_devices, device_order }
    }

    /// Sets every GPU's `cuda_index`: its position among the visible ones, `None` when
    /// hidden. Returns notes for the user (an entry that ends the list early, an ordering that
    /// may not match).
    pub fn apply(&self, gpus: &mut [GpuInfo]) -> Vec<String> {
        let mut notes = Vec::new();
        for gpu in gpus.iter_mut() {
            gpu.cuda_index = None;
        }
        let Some(list) = &self.visible_devices else {
            let mut order: Vec<usize> = (0..gpus.len()).collect();
            order.sort_by_key(|&i| gpus[i].index);
            for (ordinal, i) in order.into_iter().enumerate() {
                gpus[i].cuda_index = Some(ordinal);
            }
            notes.extend(self.order_note(gpus));
            return notes;
        };
        let mut ordinal = 0;
        for entry in list.split(',').map(str::trim) {
            let found = match entry.parse::<u32>() {
                Ok(index) => gpus.iter().position(|gpu| gpu.index == index),
                Err(_) if entry.starts_with("GPU-") => {
                    let matching: Vec<usize> = gpus
                        .iter()
                        .enumerate()
                        .filter(|(_, gpu)| gpu.uuid.starts_with(entry))
                        .map(|(i, _)| i)
                        .collect();
                    (matching.len() == 1).then(|| matching[0])
                }
                Err(_) => None,
            };
            match found {
                Some(i) if gpus[i].cuda_index.is_none() => {
                    gpus[i].cuda_index = Some(ordinal);
                    ordinal += 1;
                }
                _ => {
                    // `-1` (or any negative number) is the usual way to hide every GPU.
                    if !entry.is_empty() && !entry.starts_with('-') {
                        notes.push(format!(
                            "CUDA_VISIBLE_DEVICES: {entry:?} names no GPU here (or repeats one); \
                             CUDA ignores it and every entry after it"
                        ));
                    }
                    break;
                }
            }
        }
        if ordinal > 1 {
            notes.extend(self.order_note(gpus));
        }
        notes
    }

    fn order_note(&self, gpus: &[GpuInfo]) -> Option<String> {
        let pci_order = self
            .device_order
            .as_deref()
            .is_some_and(|o| o.trim().eq_ignore_ascii_case("PCI_BUS_ID"));
        let visible: Vec<&GpuInfo> = gpus.iter().filter(|g| g.cuda_index.is_some()).collect();
        let mixed = visible.windows(2).any(|pair| pair[0].name != pair[1].name);
        (mixed && !pci_order).then(|| {
            "these GPUs differ and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA may number them \
             fastest-first, not as listed; set CUDA_DEVICE_ORDER=PCI_BUS_ID"
                .to_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::FixedGpus;

    fn gpus(n: u32) -> Vec<GpuInfo> {
        (0..n).map(FixedGpus::idle_gpu).collect()
    }

    fn ordinals(visible: Option<&str>, n: u32) -> (Vec<Option<usize>>, Vec<String>) {
        let mut list = gpus(n);
        let notes = Visibility::new(visible.map(str::to_owned), None).apply(&mut list);
        (list.iter().map(|g| g.cuda_index).collect(), notes)
    }

    #[test]
    fn unset_shows_all_in_index_order() {
        assert_eq!(ordinals(None, 3).0, vec![Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn listed_indices_become_ordinals_in_list_order() {
        assert_eq!(ordinals(Some("2,0"), 4).0, vec![Some(1), None, Some(0), None]);
        assert_eq!(ordinals(Some(" 3 "), 4).0, vec![None, None, None, Some(0)]);
    }

    #[test]
    fn empty_hides_all_and_an_invalid_entry_ends_the_list() {
        assert_eq!(ordinals(Some(""), 2).0, vec![None, None]);
        let (order, notes) = ordinals(Some("1,7,0"), 2);
        assert_eq!(order, vec![None, Some(0)]);
        assert!(notes[0].contains("\"7\""), "{notes:?}");
        assert_eq!(ordinals(Some("-1"), 2).0, vec![None, None]);
        assert_eq!(ordinals(Some("0,0,1"), 2).0, vec![Some(0), None], "a repeat ends the list");
    }

    #[test]
    fn uuids_and_unique_prefixes() {
        let mut list = gpus(3);
        list[2].uuid = "GPU-ffff0000-1111".into();
        Visibility::new(Some("GPU-ffff,0".into()), None).apply(&mut list);
        assert_eq!(list.iter().map(|g| g.cuda_index).collect::<Vec<_>>(), [Some(1), None, Some(0)]);
        // "GPU-0000" is a prefix of every fake UUID: ambiguous, so the list ends there.
        Visibility::new(Some("GPU-0000".into()), None).apply(&mut list);
        assert!(list.iter().all(|g| g.cuda_index.is_none()));
    }

    #[test]
    fn mixed_gpus_without_pci_order_get_a_note() {
        let mut list = gpus(2);
        list[1].name = "NVIDIA RTX A4000".into();
        let notes = Visibility::new(None, None).apply(&mut list);
        assert!(notes.iter().any(|n| n.contains("CUDA_DEVICE_ORDER")), "{notes:?}");
        let notes = Visibility::new(None, Some("PCI_BUS_ID".into())).apply(&mut list);
        assert!(notes.is_empty(), "{notes:?}");
    }
}
