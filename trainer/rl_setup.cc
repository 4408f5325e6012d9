// Setting up a GRPO run: model, optimizer, data and rewards; resume or SFT warm start; workers.
#include <algorithm>
#include <filesystem>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "model/config.h"
#include "trainer/checkpoint.h"
#include "trainer/rl_inprocess_worker.h"
#include "trainer/rl_run.h"
#include "trainer/run_config.h"
#include "trainer/sft_loop.h"
#include "trainer/synthetic_tasks.h"

namespace tandem::trainer {
namespace {

absl::Status Field(const char* field, const absl::Status& s) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(field, ": ", s.message()));
}

absl::Status BuildModel(RlRun& run) {
  const RlRunConfig& c = *run.config;
  absl::StatusOr<model::ModelConfig> config = model::LoadModelConfig(c.model.config);
  TANDEM_RETURN_IF_ERROR(Field("model.config", config.status()));
  if (run.tokenizer->vocab_size() > config->vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.config: vocab_size ", config->vocab_size, " is smaller than the tokenizer's ",
        run.tokenizer->vocab_size(), " ids (tokenizer.alphabet)"));
  }
  model::ModelWeights weights;
  if (c.model.init == "random") {
    weights = model::AllocateWeights(*config);
    model::InitWeights(*config, static_cast<uint64_t>(c.model.init_seed), weights);
  } else {
    absl::StatusOr<model::ModelWeights> loaded = model::LoadWeights(*config, c.model.init);
    TANDEM_RETURN_IF_ERROR(Field("model.init", loaded.status()));
    weights = *std::move(loaded);
  }
  run.grads = model::AllocateWeights(*config);
  run.model.emplace(*config, std::move(weights));
  return absl::OkStatus();
}

absl::Status BuildOptimizer(RlRun& run) {
  const OptimSection& o = run.config->optim;
  AdamWOptions adamw{o.beta1, o.beta2, o.eps, o.weight_decay, o.decay_embeddings, o.max_grad_norm};
  LrSchedule schedule{
      o.schedule == "constant" ? LrScheduleKind::kConstant : LrScheduleKind::kCosine, o.lr,
      o.min_lr, o.warmup_steps, run.config->trainer.total_steps};
  absl::StatusOr<AdamW> adam = AdamW::Create(run.model->config(), adamw, schedule);
  TANDEM_RETURN_IF_ERROR(Field("optim", adam.status()));
  run.optimizer.emplace(*std::move(adam));
  return absl::OkStatus();
}

RlRowGenerator SyntheticGenerator(const RlRunConfig::Data& d) {
  if (d.synthetic == "countdown") {
    CountdownTaskOptions o{static_cast<uint64_t>(d.seed), static_cast<int>(d.countdown_numbers),
                           static_cast<int>(d.countdown_max_number)};
    return [o](int64_t n) { return GenerateCountdown(n, o); };
  }
  ArithmeticTaskOptions o{static_cast<uint64_t>(d.seed), static_cast<int>(d.min_digits),
                          static_cast<int>(d.max_digits), d.operators};
  return [o](int64_t n) { return GenerateArithmetic(n, o); };
}

absl::Status LoadData(RlRun& run) {
  const RlRunConfig::Data& d = run.config->data;
  if (!d.train_path.empty()) {
    absl::StatusOr<std::vector<RlPrompt>> rows = ReadRlJsonl(d.train_path);
    TANDEM_RETURN_IF_ERROR(Field("data.train_path", rows.status()));
    run.train_rows = *std::move(rows);
  } else {
    absl::StatusOr<std::vector<RlPrompt>> rows = SyntheticGenerator(d)(d.synthetic_examples);
    TANDEM_RETURN_IF_ERROR(Field("data", rows.status()));
    run.train_rows = *std::move(rows);
  }
  if (run.train_rows.empty()) return absl::InvalidArgumentError("data.train_path: no prompts");
  run.loader.emplace(static_cast<int64_t>(run.train_rows.size()), static_cast<uint64_t>(d.seed),
                     d.shuffle);
  const int64_t examples = run.config->eval.examples;
  if (!run.rank0() || examples == 0) return absl::OkStatus();
  if (!d.eval_path.empty()) {
    absl::StatusOr<std::vector<RlPrompt>> rows = ReadRlJsonl(d.eval_path);
    TANDEM_RETURN_IF_ERROR(Field("data.eval_path", rows.status()));
    run.eval_rows = *std::move(rows);
    if (static_cast<int64_t>(run.eval_rows.size()) > examples) run.eval_rows.resize(examples);
  } else if (d.train_path.empty()) {
    absl::StatusOr<std::vector<RlPrompt>> rows =
        HeldOutRows(SyntheticGenerator(d), d.synthetic_examples, examples);
    TANDEM_RETURN_IF_ERROR(Field("eval.examples", rows.status()));
    run.eval_rows = *std::move(rows);
  }
  return absl::OkStatus();
}

SftRunConfig WarmStartConfig(const RlRunConfig& c) {
  SftRunConfig s;
  s.model.config = c.model.config;
  s.model.init = c.model.init;
  s.model.init_seed = c.model.init_seed;
  s.tokenizer.alphabet = c.tokenizer.alphabet;
  s.data.synthetic = "addition";
  s.data.synthetic_examples = c.warm_start.examples;
  s.data.min_digits = c.warm_start.min_digits;
  s.data.max_digits = c.warm_start.max_digits;
  s.data.reverse_answer = c.data.reverse_answer;
  s.data.seed = c.data.seed;
  s.data.sequences_per_step = c.warm_start.sequences_per_step;
  s.data.max_tokens_per_micro_batch = c.grpo.max_tokens_per_micro_batch;
  s.optim.lr = c.warm_start.lr;
  s.optim.min_lr = c.warm_start.lr / 10;
  s.optim.warmup_steps = c.warm_start.warmup_steps;
  s.optim.max_grad_norm = c.optim.max_grad_norm;
  s.optim.expert_bias_update_rate = c.optim.expert_bias_update_rate;
  s.trainer.total_steps = c.warm_start.steps;
  s.trainer.num_threads = c.trainer.num_threads;
  s.trainer.log_every = 10;
  s.trainer.output_dir = (std::filesystem::path(c.trainer.output_dir) / "warm_start").string();
  s.checkpoint.every_steps = 0;
  s.checkpoint.keep_last = 1;
  s.checkpoint.resume = "auto";
  return s;
}

absl::Status WarmStart(RlRun& run) {
  run.Phase("warm start (SFT)");
  const SftRunConfig sft = WarmStartConfig(*run.config);
  SftLoopOptions options;
  options.collective = run.collective;
  options.eval.every_steps = -1;
  absl::StatusOr<SftResult> result = RunSft(sft, options);
  TANDEM_RETURN_IF_ERROR(Field("warm_start", result.status()));
  model::ModelConfig config = run.model->config();  // emplace destroys the old model first
  run.model.emplace(std::move(config), std::move(result->weights));
  run.warm_started = result->final_step > result->start_step;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RlRun>> SetUpRl(const RlRunConfig& config,
                                               const RlLoopOptions& options) {
  auto run = std::make_unique<RlRun>();
  run->config = &config;
  run->options = options;
  run->collective = options.collective;
  if (run->collective == nullptr) {
    run->owned_collective = MakeLocalCollective();
    run->collective = run->owned_collective.get();
  }
  const int64_t threads = config.trainer.num_threads > 0
                              ? config.trainer.num_threads
                              : std::max(1u, std::thread::hardware_concurrency());
  run->ctx.emplace(Context::Cpu(static_cast<int>(threads)));
  if (config.tokenizer.alphabet.empty()) {
    run->tokenizer.emplace();
  } else {
    absl::StatusOr<CharTokenizer> tok = CharTokenizer::FromAlphabet(config.tokenizer.alphabet);
    TANDEM_RETURN_IF_ERROR(Field("tokenizer.alphabet", tok.status()));
    run->tokenizer.emplace(*std::move(tok));
  }
  TANDEM_RETURN_IF_ERROR(BuildModel(*run));
  TANDEM_RETURN_IF_ERROR(BuildOptimizer(*run));
  TANDEM_RETURN_IF_ERROR(LoadData(*run));
  if (run->rank0()) {
    TANDEM_ASSIGN_OR_RETURN(RlRewarder rewarder,
                            RlRewarder::Create(config.reward, config.data.reverse_answer));
    run->rewarder.emplace(std::move(rewarder));
  }
  run->checkpoint_root =
      config.checkpoint.dir.empty()
          ? (std::filesystem::path(config.trainer.output_dir) / "checkpoints").string()
          : config.checkpoint.dir;
  return run;
}

absl::Status ResumeOrWarmStart(RlRun& run) {
  absl::StatusOr<std::optional<std::string>> dir =
      ResolveResume(run.checkpoint_root, run.config->checkpoint.resume);
  TANDEM_RETURN_IF_ERROR(Field("checkpoint.resume", dir.status()));
  if (!dir->has_value()) {
    return run.config->warm_start.steps > 0 ? WarmStart(run) : absl::OkStatus();
  }
  run.Phase("resume");
  TANDEM_ASSIGN_OR_RETURN(LoadedCheckpoint ckpt, LoadTrainingCheckpoint(**dir));
  if (model::ModelConfigToJson(ckpt.config) != model::ModelConfigToJson(run.model->config())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint.resume: ", **dir, " holds a different model config than model.config (",
        run.config->model.config, ")"));
  }
  run.model.emplace(std::move(ckpt.config), std::move(ckpt.weights));
  run.optimizer->state() = std::move(ckpt.optimizer);
  TANDEM_RETURN_IF_ERROR(Field("checkpoint.resume", run.loader->Restore(ckpt.loop.data_cursor)));
  run.step = ckpt.loop.step;
  run.last_checkpoint = **dir;
  run.resumed = true;
  return absl::OkStatus();
}

absl::Status StartWorkers(RlRun& run) {
  if (!run.rank0()) return absl::OkStatus();
  run.Phase("rollout workers");
  const model::ModelConfig& mc = run.model->config();
  absl::StatusOr<std::vector<std::unique_ptr<RolloutWorker>>> workers =
      run.options.make_workers
          ? run.options.make_workers(mc, run.model->weights(), run.step)
          : MakeConfiguredWorkers(*run.config, mc, run.model->weights(), run.step);
  TANDEM_RETURN_IF_ERROR(Field("rollout", workers.status()));
  if (workers->empty()) return absl::InvalidArgumentError("rollout: no workers");
  RolloutPoolOptions pool;
  pool.max_attempts = run.config->rollout.max_attempts;
  pool.request_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(run.config->rollout.request_timeout_s * 1000));
  run.pool = std::make_unique<RolloutPool>(*std::move(workers), pool);
  const bool async = run.config->rollout.mode == "async";
  run.driver =
      std::make_unique<RlRolloutDriver>(*run.pool, *run.config, *run.tokenizer, run.train_rows,
                                        async ? run.config->rollout.max_staleness : 0);
  return absl::OkStatus();
}

}  // namespace tandem::trainer
