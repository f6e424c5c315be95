//! Packs an embedded mix of UNO samples and prints the layout and each sample's attention
//! mask. `cargo run --release --example pack_demo`. (The README's main job until the
//! trainer lands, issue #6.)

use uno_core::packing::{
    EditDropout, ImageSize, PackedSequence, PackingConfig, Sample, Supervision,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Small images and 4 metaqueries so the masks fit on a terminal.
    let config = PackingConfig {
        num_metaqueries: 4,
        vit_patch_size: 16,
        ..PackingConfig::default()
    };
    let samples = [
        Sample::text_to_image(vec![101, 102, 103], ImageSize::new(32, 32), vec![201, 202]),
        Sample::Edit {
            source: ImageSize::new(16, 32),
            source_vit: ImageSize::new(16, 32),
            instruction: vec![301, 302],
            target: ImageSize::new(16, 32),
            supervision: Supervision::joint(vec![401]),
            dropout: EditDropout::default(),
        },
        Sample::understanding(ImageSize::new(16, 16), Some(vec![501]), vec![601, 602]),
    ];
    let pack = PackedSequence::pack(&samples, &config)?;
    println!(
        "packed {} samples into {} tokens: {} und / {} gen, {} noised, {} caption CE targets, {} metaqueries",
        pack.num_samples(),
        pack.len,
        pack.und_indexes.len(),
        pack.gen_indexes.len(),
        pack.noised_indexes.len(),
        pack.caption_ce.len(),
        pack.metaquery_indexes.len()
    );
    for (i, sample) in pack.samples.iter().enumerate() {
        println!(
            "\nsample {i} ({:?}), tokens {}..{}",
            sample.kind,
            sample.start,
            sample.start + sample.len
        );
        for split in &pack.splits[sample.splits.clone()] {
            let pos = &pack.position_ids[split.start..split.start + split.len];
            println!(
                "  {:<12} {:<16} tokens {:>3}..{:<3} positions {:?}",
                format!("{:?}", split.kind),
                format!("{:?}", split.mode),
                split.start,
                split.start + split.len,
                pos
            );
        }
        println!("  mask (row attends to column: # yes, . no):");
        let mask = pack.dense_mask(i);
        for row in mask.chunks(sample.len) {
            let line: String = row.iter().map(|&m| if m { '.' } else { '#' }).collect();
            println!("    {line}");
        }
    }
    Ok(())
}
