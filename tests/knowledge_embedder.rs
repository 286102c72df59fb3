//! The built-in offline embedder computes what sentence-transformers computes (reference values from
//! `SentenceTransformer(<the same directory>).encode(...)`), whatever the batch it is in.

mod support;

use supervisor::knowledge::embed::Embedder;
use supervisor::knowledge::local::LocalEmbedder;

const TEXTS: [&str; 4] = [
    "How do I deploy the shop API?",
    "def writeBoolean(self, n):\n    t = TYPE_BOOL_TRUE",
    "Cats sleep most of the day",
    "",
];

/// The first six components of each text's vector, from sentence-transformers 6.3 on the CPU.
const REFERENCE: [[f32; 6]; 3] = [
    [-0.03898, 0.00859, -0.08081, -0.02046, 0.02707, 0.01564],
    [-0.00804, -0.01616, -0.03883, 0.06255, -0.10039, -0.03099],
    [0.09148, 0.02467, 0.01468, 0.08405, -0.01936, -0.02658],
];

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_model_matches_sentence_transformers_in_any_batch() {
    let dir = support::model::model_dir();
    let model = LocalEmbedder::load(&dir, None, Some(3)).expect("load the model");
    assert_eq!(model.model(), "all-MiniLM-L6-v2");
    assert_eq!(model.dimension(), 384);
    assert_eq!(model.max_tokens(), 256);

    let texts: Vec<String> = TEXTS.iter().map(|s| s.to_string()).collect();
    let vectors = model.embed(&texts).await.expect("embed");
    assert_eq!(vectors.len(), 4);
    for (v, r) in vectors.iter().zip(REFERENCE) {
        assert_eq!(v.len(), 384);
        for (x, y) in v.iter().zip(r) {
            assert!((x - y).abs() < 2e-4, "{:?} vs {r:?}", &v[..6]);
        }
        assert!((dot(v, v) - 1.0).abs() < 1e-4, "unit length");
    }
    // Cosine similarities as sentence-transformers reports them.
    assert!((dot(&vectors[0], &vectors[1]) - -0.13825).abs() < 2e-4);
    assert!((dot(&vectors[0], &vectors[2]) - -0.03762).abs() < 2e-4);

    // Alone (no padding) or next to a long text (much padding): the same vector.
    let alone = model.embed(&texts[2..3]).await.expect("embed one");
    let padded = model
        .embed(&[texts[2].clone(), "word ".repeat(300)])
        .await
        .expect("embed with a long neighbour");
    assert!(dot(&alone[0], &padded[0]) > 0.9999);
    assert!(dot(&alone[0], &vectors[2]) > 0.9999);
    assert!(model.embed(&[]).await.expect("nothing").is_empty());
}
