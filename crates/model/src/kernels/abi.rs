//! What the CUDA kernels and the Rust side must agree on, mirrored from kernels/abi.h (which
//! explains each value; the kernels include it). The test below reads that header and fails when
//! a value here and there differ, or when the header has a value this file does not mirror.

/// Most sequences one batched decode launch takes (SP_MAX_BATCH).
pub(crate) const MAX_BATCH: usize = 16;

/// u32 words of one layer's KV table (SP_KV_TABLE_WORDS, the size of abi.h's SpKvTable: MAX_BATCH
/// key addresses, value addresses and head strides, 8 bytes each).
pub(crate) const KV_TABLE_WORDS: usize = 3 * 2 * MAX_BATCH;

/// Warps of a decode attention block (SP_DEC_WARPS).
pub(crate) const DECODE_WARPS: u32 = 4;

/// Keys a warp of a decode attention block takes per step (SP_DEC_UNROLL): key splits are
/// multiples of `DECODE_WARPS * DECODE_UNROLL` keys.
pub(crate) const DECODE_UNROLL: usize = 8;

/// The decode step's header words (token ids, lens, positions) are padded to a multiple of this
/// before the KV tables follow (SP_STEP_ALIGN_WORDS), keeping the tables aligned.
pub(crate) const STEP_ALIGN_WORDS: usize = 4;

/// 16-byte chunks of a row each thread of the LayerNorm kernel keeps in registers (SP_LN_CHUNKS):
/// rows up to `8 * LN_CHUNKS` elements a thread, a warp a row up to `256 * LN_CHUNKS`.
pub(crate) const LN_CHUNKS: usize = 4;

/// One layer's KV table as the kernels read it (abi.h's SpKvTable: the fields `k`, `v`,
/// `head_stride` in this order, MAX_BATCH 8-byte entries each), in u32 words: each entry as its
/// low then high half (little-endian, as the GPU reads it).
pub(crate) fn kv_table_words(k: &[u64; MAX_BATCH], v: &[u64; MAX_BATCH], head_stride: &[u64; MAX_BATCH]) -> Vec<u32> {
    k.iter().chain(v).chain(head_stride).flat_map(|x| [*x as u32, (*x >> 32) as u32]).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kernels::Act;

    const ABI_H: &str = include_str!("../../kernels/abi.h");

    /// Every `#define NAME VALUE` of abi.h (none of them takes arguments; each value a literal).
    fn defines() -> BTreeMap<&'static str, i64> {
        ABI_H
            .lines()
            .filter_map(|l| l.trim().strip_prefix("#define "))
            .map(|rest| {
                let (name, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                assert!(!name.contains('('), "abi.h: {name}: a function-like macro (keep it in the .cu files)");
                let value = value.split("//").next().unwrap_or("").trim();
                let value = value.parse().unwrap_or_else(|_| panic!("abi.h: {name} = {value:?} is not a decimal literal"));
                (name, value)
            })
            .collect()
    }

    /// The fields of `struct name` in abi.h: (field, bytes of one entry, entries).
    fn struct_fields(name: &str, defines: &BTreeMap<&str, i64>) -> Vec<(String, usize, usize)> {
        let start = ABI_H.find(&format!("struct {name} {{")).unwrap_or_else(|| panic!("abi.h has no struct {name}"));
        let body = &ABI_H[start..];
        let body = &body[body.find('{').unwrap_or(0) + 1..body.find("};").unwrap_or_else(|| panic!("struct {name} is not closed"))];
        let body: String = body.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join(" ");
        let mut fields = Vec::new();
        for decl in body.split(';').map(str::trim).filter(|d| !d.is_empty()) {
            let mut parts = decl.split(',').map(str::trim);
            let first = parts.next().unwrap_or_default();
            let (ty, first) = first.rsplit_once(' ').unwrap_or_else(|| panic!("struct {name}: cannot read {decl:?}"));
            let bytes = match ty.trim() {
                "unsigned long long" | "long long" => 8,
                "unsigned" | "int" | "float" => 4,
                other => panic!("struct {name}: type {other:?} (teach this test its size)"),
            };
            for field in std::iter::once(first).chain(parts) {
                let (field, count) = match field.split_once('[') {
                    Some((f, rest)) => {
                        let n = rest.trim_end_matches(']').trim();
                        let count = n.parse().ok().or_else(|| defines.get(n).map(|&v| v as usize));
                        (f, count.unwrap_or_else(|| panic!("struct {name}: array size {n:?}")))
                    }
                    None => (field, 1),
                };
                fields.push((field.trim().to_string(), bytes, count));
            }
        }
        fields
    }

    #[test]
    fn constants_match_abi_h() {
        let rust: BTreeMap<&str, i64> = [
            ("SP_MAX_BATCH", MAX_BATCH as i64),
            ("SP_KV_TABLE_WORDS", KV_TABLE_WORDS as i64),
            ("SP_DEC_WARPS", DECODE_WARPS as i64),
            ("SP_DEC_UNROLL", DECODE_UNROLL as i64),
            ("SP_STEP_ALIGN_WORDS", STEP_ALIGN_WORDS as i64),
            ("SP_LN_CHUNKS", LN_CHUNKS as i64),
            ("SP_ACT_NONE", Act::None as i64),
            ("SP_ACT_GELU_TANH", Act::GeluTanh as i64),
            ("SP_ACT_GELU_ERF", Act::GeluErf as i64),
        ]
        .into_iter()
        .collect();
        assert_eq!(defines(), rust, "kernels/abi.h and src/kernels/abi.rs differ");
    }

    #[test]
    fn kv_table_layout_matches_abi_h() {
        let fields = struct_fields("SpKvTable", &defines());
        let expected: Vec<(String, usize, usize)> = ["k", "v", "head_stride"].iter().map(|f| (f.to_string(), 8, MAX_BATCH)).collect();
        assert_eq!(fields, expected, "abi.h's SpKvTable is not what kv_table_words packs");
        assert_eq!(fields.iter().map(|(_, bytes, n)| bytes * n).sum::<usize>(), KV_TABLE_WORDS * 4);
        // Entry j of field i at word 2 (i MAX_BATCH + j): low half, then high half.
        let entry = |field: u64, j: usize| (field << 40) | (j as u64) << 8 | 0xff;
        let [k, v, s] = [0u64, 1, 2].map(|f| std::array::from_fn(|j| entry(f + 1, j)));
        let words = kv_table_words(&k, &v, &s);
        assert_eq!(words.len(), KV_TABLE_WORDS);
        for (i, field) in [k, v, s].iter().enumerate() {
            for (j, x) in field.iter().enumerate() {
                let at = 2 * (i * MAX_BATCH + j);
                assert_eq!((words[at], words[at + 1]), (*x as u32, (*x >> 32) as u32), "field {i} entry {j}");
            }
        }
    }
}
