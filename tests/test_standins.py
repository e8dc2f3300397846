"""The Hub-shaped stand-ins (`sftkit.standins`): layout, features and tokenizer settings as on the Hub.

The stand-ins are built once per module into a temporary folder (about 10 s) and read back
through the same calls a Hub id goes through: ``datasets.load_dataset(folder, split=...)`` and
``from_pretrained(folder)``.
"""

from __future__ import annotations

import json

import datasets
import pytest
import yaml

from sftkit import standins
from sftkit.config import apply_overrides, get_preset

T4_MAX_LENGTH = get_preset("t4").data.max_length


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return standins.build_standins(tmp_path_factory.mktemp("standins"), train_rows=1000, test_rows=100)


@pytest.fixture(scope="module")
def splits(paths):
    return {split: datasets.load_dataset(str(paths.dataset), split=split) for split in ("train", "test")}


def _front_matter(readme):
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_dataset_folder_has_the_hub_layout(paths):
    files = sorted(p.relative_to(paths.dataset).as_posix() for p in paths.dataset.rglob("*") if p.is_file())
    assert files == ["README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    front = _front_matter(paths.dataset / "README.md")
    assert front["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}]}]
    assert front["dataset_info"]["features"] == [
        {"name": "messages", "list": [{"name": "content", "dtype": "string"}, {"name": "role", "dtype": "string"}]},
        {"name": "source", "dtype": "string"},
    ]
    assert ([(s["name"], s["num_examples"]) for s in front["dataset_info"]["splits"]]
            == [("train", 1000), ("test", 100)])
    assert "conversations.jsonl" in (paths.dataset / "README.md").read_text()  # provenance is written down


def test_parquet_schema_is_a_list_of_content_role_structs(paths):
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(paths.dataset / "data" / "train-00000-of-00001.parquet")
    assert schema.names == ["messages", "source"]
    struct = schema.field("messages").type.value_type
    assert [struct.field(i).name for i in range(struct.num_fields)] == ["content", "role"]  # the Hub's field order
    assert schema.field("source").type == pa.string()


@pytest.mark.parametrize("streaming", [False, True])
def test_load_dataset_on_the_folder_gives_both_splits_with_the_hub_features(paths, streaming):
    for split, rows in (("train", 1000), ("test", 100)):
        data = datasets.load_dataset(str(paths.dataset), split=split, streaming=streaming)
        assert data.features == standins.HUB_FEATURES
        if not streaming:
            assert len(data) == rows
        first = next(iter(data))
        assert set(first) == {"messages", "source"} and list(first["messages"][0]) == ["content", "role"]


def test_rows_span_sources_and_shapes_and_train_is_sorted_by_source(paths, splits):
    from transformers import AutoTokenizer

    train = splits["train"]
    sources = list(train["source"])
    assert sources == sorted(sources)
    assert set(sources) == set(standins.KIND_WEIGHTS)
    assert len(set(sources[:100])) == 1  # a first-N read sees one source only
    conversations = list(train["messages"])
    assert any(len(m) >= 4 for m in conversations)  # multi-turn
    assert any(m[0]["role"] == "system" for m in conversations)
    assert any(m[0]["role"] != "system" for m in conversations)
    tokenizer = AutoTokenizer.from_pretrained(paths.base_model)
    lengths = [len(tokenizer("".join(t["content"] for t in m))["input_ids"]) for m in conversations]
    assert max(lengths) > T4_MAX_LENGTH  # some rows are longer than the t4 preset's max_length
    assert sum(n > T4_MAX_LENGTH for n in lengths) < len(lengths) / 5


def test_every_row_is_a_valid_conversation_and_test_is_disjoint_from_train(splits):
    from sftkit.data import validate_conversation

    for split in splits.values():
        for number, row in enumerate(split):
            assert validate_conversation(row) is None, (number, row)
    as_text = {split: {json.dumps(m) for m in data["messages"]} for split, data in splits.items()}
    assert not as_text["train"] & as_text["test"]


def test_base_model_folder_has_smollm2_360m_config_and_base_tokenizer(paths):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    files = {p.name for p in paths.base_model.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    assert "chat_template.jinja" not in files
    config = AutoConfig.from_pretrained(paths.base_model)
    assert config.model_type == "llama"
    for key in ("num_attention_heads", "num_key_value_heads", "vocab_size", "max_position_embeddings",
                "tie_word_embeddings"):
        assert getattr(config, key) == standins.SMOLLM2_360M_CONFIG[key], key
    assert config.rope_parameters["rope_theta"] == 100000.0
    assert (config.bos_token_id, config.eos_token_id) == (0, 0)
    tokenizer = AutoTokenizer.from_pretrained(paths.base_model)
    assert tokenizer.bos_token == tokenizer.eos_token == tokenizer.unk_token == "<|endoftext|>"
    assert tokenizer.pad_token is None
    assert tokenizer.chat_template is None
    assert len(tokenizer) == 49152
    model = AutoModelForCausalLM.from_pretrained(paths.base_model)
    assert model.config.num_hidden_layers == 2
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_instruct_model_folder_has_the_chatml_tokenizer(paths):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(paths.instruct_model)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.bos_token == "<|im_start|>"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                             add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    config = AutoConfig.from_pretrained(paths.instruct_model)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 2)


def test_base_tokenizer_is_made_ready_for_sft(paths):
    """The base tokenizer (no template, no pad, EOS <|endoftext|>) goes through prepare_tokenizer."""
    from transformers import AutoTokenizer

    from sftkit.chat import prepare_tokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(paths.base_model))
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert len(tokenizer) == 49152  # ChatML's tokens are in SmolLM2's vocabulary: nothing added


def test_overrides_point_the_t4_preset_at_the_standins(paths):
    cfg = apply_overrides(get_preset("t4"), paths.overrides())
    assert cfg.data.source == str(paths.dataset)
    assert cfg.model.name == str(paths.base_model)
    assert cfg.model.reference_name == str(paths.instruct_model)
    assert (cfg.data.preference_source, cfg.data.alpaca_source, cfg.data.classification_source) == (
        str(paths.preferences), str(paths.alpaca), str(paths.news))
    assert (cfg.model.encoder_name, cfg.model.student_name) == (str(paths.encoder), str(paths.student_model))
    t4 = get_preset("t4")  # the preset itself names the Hub ids the stand-ins replace
    assert (t4.data.preference_source, t4.data.alpaca_source, t4.data.classification_source) == (
        standins.PREFERENCE_ID, standins.ALPACA_ID, standins.NEWS_ID)
    assert (t4.model.encoder_name, t4.model.student_name) == (standins.ENCODER_ID, standins.STUDENT_ID)
    assert get_preset("cpu-demo").data.preference_source is None  # offline: on-policy pairs, no Hub


# --------------------------------------------------------------------------- the later chapters' stand-ins


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_preference_standin_has_ultrafeedback_binarized_layout_and_loads_as_dpo_pairs(paths):
    from sftkit.chapters.preference import load_hub_preferences

    assert _files(paths.preferences) == ["README.md", "data/test-00000-of-00001.parquet",
                                         "data/train-00000-of-00001.parquet"]
    front = _front_matter(paths.preferences / "README.md")
    assert [c["path"] for c in front["configs"][0]["data_files"]] == ["data/train-*", "data/test-*"]
    train = datasets.load_dataset(str(paths.preferences), split="train")
    assert train.features == standins.PREFERENCE_FEATURES
    assert all(c > r for c, r in zip(train["score_chosen"], train["score_rejected"]))
    assert all(row["chosen"][0] == row["rejected"][0] and row["chosen"][0]["role"] == "user" for row in train)
    pairs = load_hub_preferences(str(paths.preferences), limit=8)  # what chapter 06 calls on t4
    assert pairs.column_names == ["chosen", "rejected", "prompt"] and len(pairs) == 8
    assert all([m["role"] for m in row["prompt"]] == ["user"] and [m["role"] for m in row["chosen"]] == ["assistant"]
               for row in pairs)


def test_alpaca_standin_has_the_hub_layout_one_split_and_the_template_text(paths):
    from sftkit.chapters.alpaca import PROMPT_NO_INPUT, PROMPT_WITH_INPUT, load_alpaca_hub

    assert _files(paths.alpaca) == ["README.md", "data/train-00000-of-00001-a09b74b3ef9c3b56.parquet"]
    front = _front_matter(paths.alpaca / "README.md")
    assert "configs" not in front and front["license"] == "cc-by-nc-4.0"
    assert datasets.get_dataset_split_names(str(paths.alpaca)) == ["train"]
    train = datasets.load_dataset(str(paths.alpaca), split="train")
    assert train.features == standins.ALPACA_FEATURES
    with_input = [row for row in train if row["input"]]
    assert 0.2 < len(with_input) / len(train) < 0.6
    for row in train:  # the `text` column is the Alpaca template (the chapter's own) with the output
        template = PROMPT_WITH_INPUT if row["input"] else PROMPT_NO_INPUT
        assert row["text"] == template.format(**row) + row["output"]
    assert load_alpaca_hub(str(paths.alpaca)).column_names == ["instruction", "input", "output"]


def test_news_standin_has_ag_news_features_and_balanced_labels(paths):
    assert _files(paths.news) == ["README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    test = datasets.load_dataset(str(paths.news), split="test")
    assert test.features["label"].names == ["World", "Sports", "Business", "Sci/Tech"]
    counts = [list(test["label"]).count(label) for label in range(4)]
    assert max(counts) - min(counts) <= 1


def test_encoder_standin_is_bert_base_uncased_shaped_with_its_special_token_ids(paths):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = json.loads((paths.encoder / "config.json").read_text())
    reduced = {"num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size"}
    assert {k: config[k] for k in standins.BERT_BASE_UNCASED_CONFIG if k not in reduced} == {
        k: v for k, v in standins.BERT_BASE_UNCASED_CONFIG.items() if k not in reduced}
    tokenizer = AutoTokenizer.from_pretrained(paths.encoder)
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [
        0, 100, 101, 102, 103]
    assert len(tokenizer) == config["vocab_size"]
    tokens = tokenizer("Shares in Northwind FALL").tokens()
    assert tokens == ["[CLS]", "shares", "in", "northwind", "fall", "[SEP]"]  # uncased, whole words of the news
    model = AutoModelForSequenceClassification.from_pretrained(paths.encoder, num_labels=4)
    assert model(**tokenizer(["a test"], return_tensors="pt")).logits.shape == (1, 4)


def test_student_standin_has_smollm2_135m_config_and_the_base_tokenizer(paths):
    from transformers import AutoTokenizer

    config = json.loads((paths.student_model / "config.json").read_text())
    for key in ("num_attention_heads", "num_key_value_heads", "vocab_size", "tie_word_embeddings",
                "max_position_embeddings"):
        assert config[key] == standins.SMOLLM2_135M_CONFIG[key], key
    assert config["hidden_size"] % (2 * config["num_attention_heads"]) == 0
    tokenizer = AutoTokenizer.from_pretrained(paths.student_model)
    assert tokenizer.bos_token == tokenizer.eos_token == "<|endoftext|>" and tokenizer.chat_template is None


def test_model_width_must_split_into_fifteen_even_heads(tmp_path):
    with pytest.raises(ValueError, match="multiple of 30"):
        standins.build_model_standin(tmp_path / "m", instruct=False, hidden_size=100)


def test_cli_builds_the_standins(tmp_path, capsys):
    from sftkit.cli import main

    assert main(["standins", "--out", str(tmp_path), "--train-rows", "50", "--test-rows", "10"]) == 0
    paths = standins.standin_paths(tmp_path)
    assert (paths.dataset / "data" / "train-00000-of-00001.parquet").is_file()
    assert (paths.instruct_model / "model.safetensors").is_file()
    assert f"--set model.name={paths.base_model}" in capsys.readouterr().out
