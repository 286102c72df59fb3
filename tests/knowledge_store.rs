//! Knowledge storage on both backends (`conformance!`): documents and chunks written atomically,
//! full-text search with identifier splitting and filters, vector search per model with filters,
//! embedding reuse by content hash, listing and removal of sources.

mod support;

use chrono::Utc;
use supervisor::store::knowledge::SHARED;
use supervisor::store::*;
use support::db::TestDb;

conformance!(
    documents_and_chunks_are_replaced_as_a_whole,
    text_search_ranks_filters_and_splits_identifiers,
    text_search_treats_query_syntax_as_words,
    vector_search_is_cosine_per_model_and_filtered,
    filtered_vector_search_finds_rare_matches_among_many,
    embeddings_are_reused_by_content_hash,
    sources_are_listed_and_removed,
    model_names_outside_the_safe_alphabet_are_refused,
);

fn doc(project: &str, source: &str, document: &str, chunks: usize) -> DocumentRecord {
    DocumentRecord {
        project: project.into(),
        source: source.into(),
        document: document.into(),
        kind: DocumentKind::Markdown,
        url: None,
        title: Some(format!("title of {document}")),
        tags: vec![],
        content_hash: format!("hash-{document}-{chunks}"),
        size_bytes: 100,
        modified_at: None,
        model: None,
        chunk_count: chunks as i32,
        masked_secrets: 0,
        indexed_at: Utc::now(),
    }
}

fn chunk(index: i32, title: &str, content: &str) -> NewChunk {
    NewChunk {
        chunk_index: index,
        title: Some(title.into()),
        content: content.into(),
        lexemes: supervisor::knowledge::lexical::lexemes(content),
        content_hash: format!("{title}/{content}"),
        url: None,
        line_start: Some(index * 10 + 1),
        line_end: Some(index * 10 + 9),
        tags: vec![],
        embedding: None,
    }
}

fn terms(q: &str) -> Vec<String> {
    supervisor::knowledge::lexical::query_terms(q)
}

fn docs_of(hits: &[ChunkHit]) -> Vec<&str> {
    hits.iter().map(|h| h.document.as_str()).collect()
}

fn all() -> ChunkFilter {
    ChunkFilter::default()
}

async fn documents_and_chunks_are_replaced_as_a_whole(db: &TestDb) {
    let s = &db.store;
    let mut d = doc("shop", "docs", "/srv/shop/docs/deploy.md", 3);
    d.tags = vec!["ops".into()];
    d.masked_secrets = 1;
    let chunks = vec![
        chunk(0, "Deploy", "Deploy with systemd"),
        chunk(
            1,
            "Deploy > Rollback",
            "Roll back with the previous release",
        ),
        chunk(2, "Deploy > Logs", "Logs go to journald"),
    ];
    s.replace_document(&d, &chunks).await.unwrap();
    let docs = s.knowledge_documents("shop", "docs").await.unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].tags, ["ops"]);
    assert_eq!(docs[0].chunk_count, 3);
    assert_eq!(docs[0].masked_secrets, 1);
    assert_eq!(docs[0].kind, DocumentKind::Markdown);
    let hits = s.text_search(&all(), &terms("journald"), 10).await.unwrap();
    assert_eq!(hits.len(), 1);
    let rows = s.chunks_by_id(&[hits[0].id]).await.unwrap();
    assert_eq!(rows[0].title.as_deref(), Some("Deploy > Logs"));
    assert_eq!((rows[0].line_start, rows[0].line_end), (Some(21), Some(29)));
    assert_eq!(rows[0].document, "/srv/shop/docs/deploy.md");

    // A new version with fewer chunks replaces every old one: nothing of the old text is found.
    let d2 = doc("shop", "docs", "/srv/shop/docs/deploy.md", 1);
    s.replace_document(&d2, &[chunk(0, "Deploy", "Deploy with containers")])
        .await
        .unwrap();
    assert!(
        s.text_search(&all(), &terms("journald"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.knowledge_documents("shop", "docs").await.unwrap()[0].content_hash,
        "hash-/srv/shop/docs/deploy.md-1"
    );

    // Deleting a document deletes its chunks; other documents stay.
    s.replace_document(
        &doc("shop", "docs", "/srv/shop/docs/other.md", 1),
        &[chunk(0, "Other", "containers elsewhere")],
    )
    .await
    .unwrap();
    let deleted = s
        .delete_documents("shop", "docs", &["/srv/shop/docs/deploy.md".to_string()])
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(
        docs_of(
            &s.text_search(&all(), &terms("containers"), 10)
                .await
                .unwrap()
        ),
        ["/srv/shop/docs/other.md"]
    );
    assert_eq!(
        s.knowledge_documents("shop", "docs").await.unwrap().len(),
        1
    );
}

async fn text_search_ranks_filters_and_splits_identifiers(db: &TestDb) {
    let s = &db.store;
    let mut tagged = chunk(0, "fn get_user_name", "fn get_user_name(id: u32) -> String");
    tagged.tags = vec!["rust".into(), "api".into()];
    s.replace_document(&doc("shop", "code", "/shop/user.rs", 1), &[tagged])
        .await
        .unwrap();
    s.replace_document(
        &doc("shop", "docs", "/shop/deploy.md", 1),
        &[chunk(
            0,
            "Deploy",
            "How to deploy the shop API with cargo and systemd",
        )],
    )
    .await
    .unwrap();
    s.replace_document(
        &doc("shop", "docs", "/shop/cats.md", 1),
        &[chunk(0, "Cats", "Cats sleep most of the day")],
    )
    .await
    .unwrap();
    s.replace_document(
        &doc("blog", "docs", "/blog/deploy.md", 1),
        &[chunk(0, "Deploy", "Deploy the blog with deploy scripts")],
    )
    .await
    .unwrap();
    s.replace_document(
        &doc(SHARED, "handbook", "handbook/deploy.md", 1),
        &[chunk(
            0,
            "Deploying",
            "Every deploy needs a changelog entry",
        )],
    )
    .await
    .unwrap();
    s.replace_document(
        &doc("blog", "code", "/blog/render.js", 1),
        &[chunk(
            0,
            "function renderPostTitle",
            "function renderPostTitle(post) {}",
        )],
    )
    .await
    .unwrap();

    let shop_and_shared = ChunkFilter {
        projects: Some(vec!["shop".into(), SHARED.into()]),
        ..Default::default()
    };
    let hits = s
        .text_search(&shop_and_shared, &terms("deploying API"), 10)
        .await
        .unwrap();
    assert_eq!(docs_of(&hits), ["/shop/deploy.md", "handbook/deploy.md"]);
    assert!(hits[0].score > hits[1].score && hits[1].score > 0.0);

    // camelCase in the query meets snake_case in the code, and the other way round.
    let hits = s
        .text_search(&all(), &terms("getUserName"), 10)
        .await
        .unwrap();
    assert_eq!(docs_of(&hits), ["/shop/user.rs"]);
    let hits = s
        .text_search(&all(), &terms("render_post_title"), 10)
        .await
        .unwrap();
    assert_eq!(docs_of(&hits), ["/blog/render.js"]);
    let hits = s
        .text_search(&all(), &terms("post title"), 10)
        .await
        .unwrap();
    assert_eq!(docs_of(&hits), ["/blog/render.js"]);

    // Sources and tags.
    let code_only = ChunkFilter {
        sources: vec!["code".into()],
        ..Default::default()
    };
    assert!(
        s.text_search(&code_only, &terms("deploy"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let tagged = ChunkFilter {
        tags: vec!["rust".into(), "api".into()],
        ..Default::default()
    };
    assert_eq!(
        docs_of(&s.text_search(&tagged, &terms("user"), 10).await.unwrap()),
        ["/shop/user.rs"]
    );
    let missing_tag = ChunkFilter {
        tags: vec!["rust".into(), "web".into()],
        ..Default::default()
    };
    assert!(
        s.text_search(&missing_tag, &terms("user"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let nobody = ChunkFilter {
        projects: Some(vec![]),
        ..Default::default()
    };
    assert!(
        s.text_search(&nobody, &terms("deploy"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn text_search_treats_query_syntax_as_words(db: &TestDb) {
    let s = &db.store;
    s.replace_document(
        &doc("p", "docs", "a.md", 1),
        &[chunk(0, "A", "unbalanced quotes and parentheses")],
    )
    .await
    .unwrap();
    for q in [
        "\"unbalanced AND (OR *",
        "NEAR(a b) unbalanced:",
        "' OR 1=1 --",
        "unbalanced & | ! <->",
    ] {
        let raw: Vec<String> = q.split_whitespace().map(str::to_string).collect();
        let hits = s.text_search(&all(), &raw, 10).await;
        assert!(hits.is_ok(), "{q}: {hits:?}");
    }
    let raw = vec!["\"unbalanced".to_string(), "(OR".into()];
    assert_eq!(
        docs_of(&s.text_search(&all(), &raw, 10).await.unwrap()),
        ["a.md"]
    );
    assert!(s.text_search(&all(), &[], 10).await.unwrap().is_empty());
    assert!(
        s.text_search(&all(), &["  ".into(), "*".into()], 10)
            .await
            .unwrap()
            .is_empty()
    );
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn embedded(index: i32, text: &str, model: &str, v: &[f32]) -> NewChunk {
    let mut c = chunk(index, text, text);
    c.embedding = Some((model.to_string(), unit(v)));
    c
}

async fn vector_search_is_cosine_per_model_and_filtered(db: &TestDb) {
    let s = &db.store;
    for (name, v) in [
        ("x.md", [1.0, 0.0, 0.0]),
        ("xy.md", [1.0, 1.0, 0.0]),
        ("z.md", [0.0, 0.0, 1.0]),
    ] {
        s.replace_document(&doc("p", "docs", name, 1), &[embedded(0, name, "m1", &v)])
            .await
            .unwrap();
    }
    s.replace_document(
        &doc("p", "docs", "other.md", 1),
        &[embedded(0, "o", "m2", &[1.0, 0.0, 0.0])],
    )
    .await
    .unwrap();
    s.replace_document(
        &doc("p", "docs", "wide.md", 1),
        &[embedded(0, "w", "m1", &[1.0, 0.0, 0.0, 0.0])],
    )
    .await
    .unwrap();
    s.replace_document(
        &doc("q", "docs", "q.md", 1),
        &[embedded(0, "q", "m1", &[1.0, 0.0, 0.0])],
    )
    .await
    .unwrap();
    let only_p = ChunkFilter {
        projects: Some(vec!["p".into()]),
        ..Default::default()
    };
    let hits = s
        .vector_search(&only_p, "m1", &unit(&[1.0, 0.1, 0.0]), 2)
        .await
        .unwrap();
    assert_eq!(docs_of(&hits), ["x.md", "xy.md"]);
    assert!(
        (hits[0].score - 0.995).abs() < 0.01,
        "cosine similarity, got {}",
        hits[0].score
    );
    // Another model, another dimension: never mixed.
    let m2 = s
        .vector_search(&all(), "m2", &unit(&[1.0, 0.0, 0.0]), 10)
        .await
        .unwrap();
    assert_eq!(docs_of(&m2), ["other.md"]);
    let wide = s
        .vector_search(&all(), "m1", &unit(&[1.0, 0.0, 0.0, 0.0]), 10)
        .await
        .unwrap();
    assert_eq!(docs_of(&wide), ["wide.md"]);
    let only_q = ChunkFilter {
        projects: Some(vec!["q".into()]),
        ..Default::default()
    };
    assert_eq!(
        docs_of(
            &s.vector_search(&only_q, "m1", &unit(&[0.0, 1.0, 0.0]), 10)
                .await
                .unwrap()
        ),
        ["q.md"]
    );
    if let Location::Postgres(url) = &db.location {
        // One partial HNSW index per (model, dimension), created with the model's first vectors.
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'knowledge_chunks'
               AND indexdef ILIKE '%USING hnsw%' ORDER BY indexname",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(indexes.len(), 4, "{indexes:?}");
        assert!(indexes.contains(&"knowledge_chunks_hnsw_all_minilm_l6_v2".to_string()));
        assert!(
            indexes
                .iter()
                .any(|i| i.starts_with("knowledge_chunks_hnsw_m1_3_"))
        );
        assert!(
            indexes
                .iter()
                .any(|i| i.starts_with("knowledge_chunks_hnsw_m1_4_"))
        );
        assert!(
            indexes
                .iter()
                .any(|i| i.starts_with("knowledge_chunks_hnsw_m2_3_"))
        );
        pool.close().await;
    }
}

async fn filtered_vector_search_finds_rare_matches_among_many(db: &TestDb) {
    // 2,000 chunks of one project close to the query and 5 of another far from it: a search confined to
    // the second project must still return all 5 (an HNSW scan that stopped at ef_search candidates and
    // filtered afterwards would find none).
    let s = &db.store;
    let dim = 384;
    let mut rng: u64 = 42;
    let mut next = || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((rng >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    for d in 0..40 {
        let chunks: Vec<NewChunk> = (0..50)
            .map(|i| {
                let mut v: Vec<f32> = (0..dim).map(|_| next() * 0.2).collect();
                v[0] += 1.0;
                embedded(i, &format!("near {d}/{i}"), "all-MiniLM-L6-v2", &v)
            })
            .collect();
        s.replace_document(&doc("big", "docs", &format!("near-{d}.md"), 50), &chunks)
            .await
            .unwrap();
    }
    for d in 0..5 {
        let mut v: Vec<f32> = (0..dim).map(|_| next() * 0.2).collect();
        v[1] += 1.0;
        s.replace_document(
            &doc("small", "docs", &format!("far-{d}.md"), 1),
            &[embedded(0, &format!("far {d}"), "all-MiniLM-L6-v2", &v)],
        )
        .await
        .unwrap();
    }
    let mut q = vec![0.0; dim];
    q[0] = 1.0;
    let small = ChunkFilter {
        projects: Some(vec!["small".into()]),
        ..Default::default()
    };
    let hits = s
        .vector_search(&small, "all-MiniLM-L6-v2", &q, 10)
        .await
        .unwrap();
    assert_eq!(hits.len(), 5, "{hits:?}");
    let hits = s
        .vector_search(&all(), "all-MiniLM-L6-v2", &q, 20)
        .await
        .unwrap();
    assert_eq!(hits.len(), 20);
    assert!(hits.iter().all(|h| h.document.starts_with("near-")));
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
}

async fn embeddings_are_reused_by_content_hash(db: &TestDb) {
    let s = &db.store;
    let mut c = embedded(0, "a", "m1", &[3.0, 4.0]);
    c.content_hash = "h-a".into();
    let mut c2 = embedded(1, "b", "m2", &[1.0, 0.0]);
    c2.content_hash = "h-b".into();
    s.replace_document(&doc("p", "docs", "a.md", 2), &[c, c2])
        .await
        .unwrap();
    let found = s
        .embeddings_by_hash("m1", &["h-a".into(), "h-b".into(), "h-missing".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "h-a");
    assert!((found[0].1[0] - 0.6).abs() < 1e-6 && (found[0].1[1] - 0.8).abs() < 1e-6);
    assert!(s.embeddings_by_hash("m1", &[]).await.unwrap().is_empty());
}

async fn sources_are_listed_and_removed(db: &TestDb) {
    let s = &db.store;
    let mut d = doc("shop", "docs", "a.md", 2);
    d.masked_secrets = 2;
    s.replace_document(
        &d,
        &[
            embedded(0, "one", "m1", &[1.0, 0.0]),
            chunk(1, "two", "two"),
        ],
    )
    .await
    .unwrap();
    s.replace_document(
        &doc("shop", "docs", "b.md", 1),
        &[chunk(0, "three", "three")],
    )
    .await
    .unwrap();
    s.replace_document(&doc(SHARED, "handbook", "h.md", 1), &[chunk(0, "h", "h")])
        .await
        .unwrap();
    s.replace_document(&doc("blog", "docs", "c.md", 1), &[chunk(0, "c", "c")])
        .await
        .unwrap();

    let listed = s
        .knowledge_sources(Some(&["shop".into(), SHARED.into()]))
        .await
        .unwrap();
    let summary: Vec<(&str, &str, i64, i64, i64, i64)> = listed
        .iter()
        .map(|x| {
            (
                x.project.as_str(),
                x.source.as_str(),
                x.documents,
                x.chunks,
                x.unembedded,
                x.masked_secrets,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("", "handbook", 1, 1, 1, 0), ("shop", "docs", 2, 3, 2, 2)]
    );
    assert_eq!(listed[1].models.get("m1"), Some(&1));
    assert!(listed[1].last_indexed_at.is_some());
    assert_eq!(s.knowledge_sources(None).await.unwrap().len(), 3);

    assert_eq!(s.delete_source("shop", "docs").await.unwrap(), (2, 3));
    assert_eq!(s.delete_source("shop", "docs").await.unwrap(), (0, 0));
    assert_eq!(s.knowledge_sources(None).await.unwrap().len(), 2);
    assert!(
        s.text_search(&all(), &terms("three"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn model_names_outside_the_safe_alphabet_are_refused(db: &TestDb) {
    let s = &db.store;
    let bad = "m'; DROP TABLE knowledge_chunks; --";
    let err = s
        .replace_document(
            &doc("p", "docs", "a.md", 1),
            &[embedded(0, "a", bad, &[1.0])],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(s.knowledge_documents("p", "docs").await.unwrap().is_empty());
    assert!(s.vector_search(&all(), bad, &[1.0], 10).await.is_err());
}
