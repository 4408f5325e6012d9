// Data: tokenizer round trips, JSONL rows of every form and their errors (file:line, field),
// first-fit packing layout, loader order/restore, and the addition task's determinism.
#include "trainer/data.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "gtest/gtest.h"
#include "trainer/addition_task.h"

namespace tandem::trainer {
namespace {

std::string TempFile(const std::string& name, const std::string& content) {
  const std::string path = ::testing::TempDir() + "/" + std::to_string(getpid()) + "_" + name;
  std::ofstream(path) << content;
  return path;
}

TEST(CharTokenizerTest, RoundTripAndErrors) {
  model::CharTokenizer tok = *MakeCharTokenizer("");
  EXPECT_EQ(tok.vocab_size(), 99);
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_EQ(tok.bos_id(), 2);
  EXPECT_EQ(tok.SpecialId("<unk>"), 3);
  auto ids = tok.Encode("Hi 7+8=15~");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ((*ids)[0], 4 + ('H' - 0x20));  // the first character is id 4
  EXPECT_EQ(*tok.Decode(*ids), "Hi 7+8=15~");
  std::vector<int32_t> with_specials = {tok.bos_id(), (*ids)[0], tok.eos_id()};
  EXPECT_EQ(*tok.Decode(with_specials), "H");
  auto bad = tok.Encode("tab\there");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("offset 3"), std::string::npos) << bad.status();
  EXPECT_FALSE(tok.Decode({99}).ok());
  EXPECT_FALSE(tok.Decode({-1}).ok());

  auto small = MakeCharTokenizer(kAdditionAlphabet);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->vocab_size(), 16);
  EXPECT_EQ(*small->Encode("10+2="), (std::vector<int32_t>{5, 4, 14, 6, 15}));
  EXPECT_FALSE(small->Encode("1-2").ok());
  EXPECT_FALSE(MakeCharTokenizer("aba").ok());
  EXPECT_FALSE(MakeCharTokenizer("a\x01").ok());
}

TEST(JsonlTest, EveryRowForm) {
  model::CharTokenizer tok = *MakeCharTokenizer("abc+=");
  const std::string path = TempFile("rows.jsonl",
                                    "{\"text\": \"ab\"}\n"
                                    "\n"
                                    "{\"prompt\": \"a+b=\", \"response\": \"c\"}\n"
                                    "{\"input_ids\": [5, 6, 7], \"loss_mask\": [0, 1, true]}\n"
                                    "{\"input_ids\": [1, 2]}\n");
  auto rows = ReadJsonl(path, &tok, {.vocab_size = 9});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ((*rows)[0].tokens, (std::vector<int32_t>{2, 4, 5, 1}));  // bos a b eos
  EXPECT_EQ((*rows)[0].loss_mask, (std::vector<uint8_t>{0, 1, 1, 1}));
  EXPECT_EQ((*rows)[1].tokens, (std::vector<int32_t>{2, 4, 7, 5, 8, 6, 1}));
  EXPECT_EQ((*rows)[1].loss_mask, (std::vector<uint8_t>{0, 0, 0, 0, 0, 1, 1}));
  EXPECT_EQ((*rows)[2].loss_mask, (std::vector<uint8_t>{0, 1, 1}));
  EXPECT_EQ((*rows)[3].loss_mask, (std::vector<uint8_t>{1, 1}));
}

TEST(JsonlTest, BadLinesNameFileLineAndField) {
  model::CharTokenizer tok = *MakeCharTokenizer("");
  struct Case {
    std::string line, expect;
  } cases[] = {
      {"{\"text\": 5}", "field 'text': expected a string"},
      {"{\"prompt\": \"x\"}", "field 'response': missing"},
      {"{\"input_ids\": [1, \"a\"]}", "field 'input_ids': element 1"},
      {"{\"input_ids\": [1, 200]}", "element 1 = 200 outside"},
      {"{\"input_ids\": [1, 2], \"loss_mask\": [1]}", "field 'loss_mask'"},
      {"{\"input_ids\": [1, 2], \"loss_mask\": [1, 2]}", "element 1 is not 0/1"},
      {"{\"text\": \"tab\\t\"}", "field 'text': text: byte 0x09"},
      {"{\"other\": 1}", "expected one of the fields"},
      {"not json", "not valid JSON"},
  };
  for (const Case& c : cases) {
    const std::string path = TempFile("bad.jsonl", "{\"text\": \"ok\"}\n\n" + c.line + "\n");
    auto rows = ReadJsonl(path, &tok, {.vocab_size = 99});
    ASSERT_FALSE(rows.ok()) << c.line;
    const std::string msg(rows.status().message());
    EXPECT_NE(msg.find(path + ":3:"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
  }
  EXPECT_EQ(ReadJsonl("/nonexistent/x.jsonl", &tok).status().code(), absl::StatusCode::kNotFound);
}

Example Ex(int n, int first_target) {
  Example e;
  for (int i = 0; i < n; ++i) {
    e.tokens.push_back(10 * n + i);
    e.loss_mask.push_back(i >= first_target);
  }
  return e;
}

TEST(PackTest, FirstFitInOrderWithTargets) {
  // Budget 10: [6] opens A, [5] opens B, [4] fits A (10), [3] fits B (8), [2] fits B (10), [1] → C.
  std::vector<Example> ex = {Ex(6, 2), Ex(5, 0), Ex(4, 1), Ex(3, 3), Ex(2, 1), Ex(1, 0)};
  auto mbs = PackMicroBatches(ex, 10);
  ASSERT_TRUE(mbs.ok()) << mbs.status();
  ASSERT_EQ(mbs->size(), 3u);
  EXPECT_EQ((*mbs)[0].examples, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ((*mbs)[1].examples, (std::vector<int64_t>{1, 3, 4}));
  EXPECT_EQ((*mbs)[2].examples, (std::vector<int64_t>{5}));
  EXPECT_EQ((*mbs)[0].cu_seqlens, (std::vector<int32_t>{0, 6, 10}));
  // Sequence 0 (60..65, targets from token 2): positions 1..4 predict 62..65; 0 and 5 have none.
  EXPECT_EQ((*mbs)[0].targets, (std::vector<int32_t>{-1, 62, 63, 64, 65, -1, 41, 42, 43, -1}));
  EXPECT_EQ((*mbs)[0].loss_mask, (std::vector<float>{0, 1, 1, 1, 1, 0, 1, 1, 1, 0}));
  EXPECT_EQ((*mbs)[0].num_targets(), 7);
  EXPECT_EQ((*mbs)[1].cu_seqlens, (std::vector<int32_t>{0, 5, 8, 10}));
  EXPECT_EQ((*mbs)[2].targets, (std::vector<int32_t>{-1}));  // a 1-token sequence has no target
  model::ForwardInput in = ToForwardInput((*mbs)[1]);
  EXPECT_EQ(in.tokens.numel(), 10);
  EXPECT_EQ(in.cu_seqlens.numel(), 4);
  EXPECT_EQ(in.targets.data<int32_t>()[0], 51);

  auto too_long = PackMicroBatches(ex, 5);
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.status().message().find("examples[0]"), std::string::npos);
}

TEST(DataLoaderTest, EpochsArePermutationsAndRestoreResumes) {
  DataLoader a(7, 42, /*shuffle=*/true);
  std::vector<int64_t> first = a.Next(7);
  EXPECT_EQ(std::set<int64_t>(first.begin(), first.end()).size(), 7u);
  EXPECT_NE(first, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));  // seed 42 does shuffle
  std::vector<int64_t> more = a.Next(3);                          // epoch 1 begins
  EXPECT_EQ(a.cursor().epoch, 1);
  const DataCursor saved = a.cursor();
  std::vector<int64_t> rest = a.Next(9);

  DataLoader b(7, 42, true);
  ASSERT_TRUE(b.Restore(*DataCursor::FromJson(saved.ToJson())).ok());
  EXPECT_EQ(b.Next(9), rest);
  DataLoader c(7, 42, true);
  c.Next(10);
  EXPECT_EQ(c.Next(9), rest);  // same as never stopping

  DataLoader plain(4, 1, false);
  EXPECT_EQ(plain.Next(6), (std::vector<int64_t>{0, 1, 2, 3, 0, 1}));
  EXPECT_FALSE(b.Restore({.seed = 43, .epoch = 0, .position = 0}).ok());
  EXPECT_FALSE(b.Restore({.seed = 42, .epoch = 0, .position = 8}).ok());
  EXPECT_FALSE(DataCursor::FromJson({{"seed", 1}}).ok());
}

TEST(AdditionTaskTest, CorrectDeterministicAndPrefixStable) {
  auto rows = GenerateAdditionTask(200, {.seed = 7, .min_digits = 2, .max_digits = 4});
  ASSERT_TRUE(rows.ok());
  for (const PromptResponse& r : *rows) {
    const size_t plus = r.prompt.find('+');
    ASSERT_NE(plus, std::string::npos);
    ASSERT_EQ(r.prompt.back(), '=');
    const std::string a = r.prompt.substr(0, plus);
    const std::string b = r.prompt.substr(plus + 1, r.prompt.size() - plus - 2);
    EXPECT_GE(a.size(), 2u);
    EXPECT_LE(b.size(), 4u);
    EXPECT_NE(a[0], '0');
    EXPECT_EQ(std::stoull(r.response), std::stoull(a) + std::stoull(b)) << r.prompt;
  }
  auto prefix = GenerateAdditionTask(50, {.seed = 7, .min_digits = 2, .max_digits = 4});
  for (int i = 0; i < 50; ++i) EXPECT_EQ((*prefix)[i].prompt, (*rows)[i].prompt);
  auto other = GenerateAdditionTask(50, {.seed = 8, .min_digits = 2, .max_digits = 4});
  int same = 0;
  for (int i = 0; i < 50; ++i) same += (*other)[i].prompt == (*rows)[i].prompt;
  EXPECT_LT(same, 5);
  auto rev = GenerateAdditionTask(
      3, {.seed = 7, .min_digits = 2, .max_digits = 4, .reverse_answer = true});
  std::string want = (*rows)[0].response;
  std::reverse(want.begin(), want.end());
  EXPECT_EQ((*rev)[0].response, want);
  EXPECT_FALSE(GenerateAdditionTask(1, {.min_digits = 0}).ok());

  // Written rows read back through the JSONL reader with the task's alphabet.
  const std::string path = TempFile("add.jsonl", "");
  ASSERT_TRUE(WriteJsonl(path, *prefix).ok());
  model::CharTokenizer tok = *MakeCharTokenizer(kAdditionAlphabet);
  auto ex = ReadJsonl(path, &tok);
  ASSERT_TRUE(ex.ok()) << ex.status();
  ASSERT_EQ(ex->size(), 50u);
  std::vector<int32_t> resp((*ex)[0].tokens.end() - 1 - (*prefix)[0].response.size(),
                            (*ex)[0].tokens.end() - 1);
  EXPECT_EQ(*tok.Decode(resp), (*prefix)[0].response);
}

}  // namespace
}  // namespace tandem::trainer
