// LoadTokenizer and the "tandem_char" tokenizer: encode/decode round trip with the documented id
// layout, a character outside the alphabet named with its offset, the JSON form round-tripping
// through a file, malformed specials rejected, an HF tokenizer.json refused with Unimplemented and
// a missing file reported as NotFound naming the path.
#include "model/tokenizer.h"

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"

namespace tandem::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::map<std::string, int32_t> kSpecials = {
    {"<pad>", 0}, {"<eos>", 1}, {"<bos>", 2}, {"<unk>", 3}};

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

TEST(CharTokenizerTest, RoundTripAndIdLayout) {
  absl::StatusOr<CharTokenizer> tok = CharTokenizer::Create("0123456789+= ", kSpecials);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->vocab_size(), 17);
  EXPECT_EQ(tok->eos_id(), 1);
  EXPECT_EQ(tok->bos_id(), 2);
  EXPECT_EQ(tok->pad_id(), 0);
  EXPECT_EQ(tok->SpecialId("<mask>"), -1);
  absl::StatusOr<std::vector<int32_t>> ids = tok->Encode("12+0=");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(5, 6, 14, 4, 15));  // alphabet[i] is id 4 + i
  absl::StatusOr<std::string> text = tok->Decode(*ids);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "12+0=");
  // Specials decode to nothing, <unk> to '?'.
  EXPECT_EQ(*tok->Decode({2, 5, 3, 6, 1, 0}), "1?2");
  EXPECT_THAT(tok->Decode({5, 17}).status().message(), HasSubstr("ids[1] = 17: outside [0, 17)"));
  EXPECT_EQ(*tok->Encode(""), std::vector<int32_t>{});
}

TEST(CharTokenizerTest, UnknownCharacterNamesItAndItsOffset) {
  absl::StatusOr<CharTokenizer> tok = CharTokenizer::Create("0123456789+=", kSpecials);
  ASSERT_TRUE(tok.ok()) << tok.status();
  absl::StatusOr<std::vector<int32_t>> ids = tok->Encode("1+x=2");
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ids.status().message(), HasSubstr("'x' at offset 2 is not in the tokenizer's"));
  EXPECT_THAT(tok->Encode("1\x01").status().message(), HasSubstr("byte 0x01 at offset 1"));
}

TEST(CharTokenizerTest, RejectsBadAlphabetsAndSpecials) {
  EXPECT_THAT(CharTokenizer::Create("", kSpecials).status().message(), HasSubstr("alphabet"));
  EXPECT_THAT(CharTokenizer::Create("abca", kSpecials).status().message(),
              HasSubstr("'a' appears more than once"));
  EXPECT_THAT(CharTokenizer::Create("a\xc3\xa9", kSpecials).status().message(),
              HasSubstr("byte 0xc3 at offset 1"));
  EXPECT_THAT(CharTokenizer::Create("ab", {{"<pad>", 0}, {"<eos>", 2}}).status().message(),
              HasSubstr("\"<eos>\" = 2"));
  EXPECT_THAT(CharTokenizer::Create("ab", {{"<pad>", 1}, {"<eos>", 1}}).status().message(),
              HasSubstr("ids 0..1 once each"));
  // No specials at all: the alphabet starts at id 0.
  EXPECT_THAT(*CharTokenizer::Create("ab", {})->Encode("ba"), ElementsAre(1, 0));
}

TEST(LoadTokenizerTest, CharFormThroughAFile) {
  testing::TempDir dir("tokenizer_test");
  WriteFile(dir.Sub("tokenizer.json"),
            R"({"type": "tandem_char", "alphabet": "abc",
                "special_tokens": {"<pad>": 0, "<eos>": 1}})");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(dir.path().string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 5);
  EXPECT_EQ((*tok)->eos_id(), 1);
  EXPECT_EQ((*tok)->bos_id(), -1);
  EXPECT_THAT(*(*tok)->Encode("cab"), ElementsAre(4, 2, 3));
  // ToJson writes what LoadTokenizer reads.
  absl::StatusOr<CharTokenizer> made = CharTokenizer::Create("xyz", kSpecials);
  ASSERT_TRUE(made.ok());
  WriteFile(dir.Sub("tokenizer.json"), made->ToJson().dump());
  tok = LoadTokenizer(dir.path().string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT(*(*tok)->Encode("zyx"), ElementsAre(6, 5, 4));
  EXPECT_EQ((*tok)->SpecialId("<unk>"), 3);
}

TEST(LoadTokenizerTest, HuggingFaceFormIsUnimplemented) {
  testing::TempDir dir("tokenizer_test");
  WriteFile(dir.Sub("tokenizer.json"),
            R"({"version": "1.0", "added_tokens": [], "model": {"type": "BPE", "vocab": {}}})");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(dir.path().string());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(
      tok.status().message(),
      HasSubstr("HF byte-level BPE tokenizers are not supported yet: pass --prompt-tokens"));
}

TEST(LoadTokenizerTest, MissingOrMalformedFile) {
  testing::TempDir dir("tokenizer_test");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(dir.path().string());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tok.status().message(), HasSubstr(dir.Sub("tokenizer.json")));
  WriteFile(dir.Sub("tokenizer.json"), "{not json");
  EXPECT_THAT(LoadTokenizer(dir.path().string()).status().message(),
              HasSubstr("tokenizer.json: not a JSON object"));
  WriteFile(dir.Sub("tokenizer.json"), R"({"type": "wordpiece"})");
  EXPECT_THAT(LoadTokenizer(dir.path().string()).status().message(),
              HasSubstr("type: expected \"tandem_char\""));
  WriteFile(dir.Sub("tokenizer.json"),
            R"({"type": "tandem_char", "alphabet": "ab", "special_tokens": {"<eos>": "1"}})");
  EXPECT_THAT(LoadTokenizer(dir.path().string()).status().message(),
              HasSubstr("\"<eos>\": expected an integer id"));
}

}  // namespace
}  // namespace tandem::model
