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
    assert [(s["name"], s["num_examples"]) for s in front["dataset_info"]["splits"]] == [("train", 1000), ("test", 100)]
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
