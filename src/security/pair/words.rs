//! The pairing word list: 256 common English words, lowercase ASCII, 3 to 8 letters, all
//! distinct, so that each word carries exactly 8 bits and is easy to read aloud and type.

/// The words; a code word is `WORDS[random byte]`.
pub(super) const WORDS: [&str; 256] = [
    "acorn", "actor", "agent", "alarm", "album", "amber", "anchor", "angle", "apple", "apron",
    "arrow", "atlas", "attic", "autumn", "bacon", "badge", "bagel", "baker", "balloon", "bamboo",
    "banana", "banjo", "barrel", "basket", "beach", "beacon", "beaver", "berry", "bicycle",
    "biscuit", "blanket", "blossom", "bonnet", "border", "bottle", "boulder", "bracket", "branch",
    "bread", "breeze", "brick", "bridge", "bronze", "brook", "bubble", "bucket", "buffalo",
    "bundle", "butter", "button", "cabin", "cactus", "camel", "camera", "candle", "canoe",
    "canvas", "canyon", "carpet", "carrot", "castle", "cedar", "cellar", "chalk", "cherry",
    "chimney", "circle", "citrus", "clover", "cobalt", "coconut", "comet", "compass", "copper",
    "coral", "cotton", "cousin", "cradle", "crayon", "cricket", "crystal", "cupboard", "curtain",
    "cushion", "daisy", "dancer", "desert", "diamond", "dinner", "dolphin", "donkey", "dragon",
    "drawer", "dream", "drum", "eagle", "echo", "elbow", "ember", "engine", "falcon", "feather",
    "fern", "fiddle", "field", "finch", "flame", "flute", "forest", "fossil", "fountain", "fox",
    "garden", "garlic", "gazelle", "ginger", "glacier", "globe", "goose", "granite", "grape",
    "gravel", "guitar", "hammer", "harbor", "harvest", "hazel", "helmet", "heron", "hill", "honey",
    "horizon", "island", "ivory", "jacket", "jaguar", "jasmine", "jelly", "jigsaw", "jungle",
    "kettle", "kitten", "koala", "ladder", "lagoon", "lantern", "lemon", "lens", "lily", "linen",
    "lion", "lizard", "lobster", "locket", "magnet", "mango", "maple", "marble", "meadow", "melon",
    "mirror", "mitten", "monkey", "moss", "mountain", "muffin", "napkin", "needle", "nest",
    "nickel", "noodle", "oasis", "ocean", "olive", "onion", "orange", "orbit", "orchid", "otter",
    "oyster", "paddle", "palace", "panda", "paper", "parrot", "peach", "pebble", "pencil",
    "pepper", "piano", "pigeon", "pillow", "pilot", "planet", "plum", "pocket", "pony", "poppy",
    "potato", "prism", "puzzle", "quartz", "quill", "rabbit", "radar", "radio", "raven", "ribbon",
    "river", "robin", "rocket", "saddle", "salmon", "sandal", "scarf", "shadow", "shell", "silver",
    "sketch", "sparrow", "spider", "spoon", "squirrel", "stone", "summer", "sunset", "swan",
    "table", "teapot", "thunder", "tiger", "timber", "toast", "tomato", "torch", "tower",
    "tractor", "tulip", "tunnel", "turtle", "umbrella", "valley", "velvet", "violin", "volcano",
    "wagon", "walnut", "whale", "whistle", "willow", "window", "winter", "wizard", "wolf",
    "yogurt", "zebra",
];
