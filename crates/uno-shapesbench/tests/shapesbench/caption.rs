//! Caption accuracy on hand-made strings.

use uno_shapesbench::CaptionAccuracy;

#[test]
fn exact_match_and_word_accuracy() {
    let a = CaptionAccuracy::of([
        ("a b c", "a b c"),
        // a and c match at their positions; 4 words against 3: over 4.
        ("a x c d", "a b c"),
        // Stops early: 1 match over the reference's 2 words.
        ("a", "a b"),
    ]);
    assert_eq!(a.captions, 3);
    assert!((a.exact_match - 1.0 / 3.0).abs() < 1e-12);
    // (3 + 2 + 1) / (3 + 4 + 2)
    assert!((a.token_accuracy - 6.0 / 9.0).abs() < 1e-12, "{a:?}");
    let none = CaptionAccuracy::of(std::iter::empty::<(&str, &str)>());
    assert_eq!(
        (none.captions, none.exact_match, none.token_accuracy),
        (0, 0.0, 0.0)
    );
}
