/**
 * What a decode step costs on this machine, learned from the steps themselves: a fixed part (one
 * pass over the weights, graph set-up) plus a part per token in the batch. A least-squares line
 * through recent steps, older ones weighing less, so it follows the load and the hardware.
 */
export class StepCost {
  private weight = 0;
  private sumTokens = 0;
  private sumSeconds = 0;
  private sumTokens2 = 0;
  private sumTokensSeconds = 0;

  /**
   * @param decay how much an older step still counts after each new one
   * @param minimumSteps steps (in weight) before the line is trusted
   */
  constructor(
    private readonly decay = 0.98,
    private readonly minimumSteps = 8,
  ) {}

  observe(tokens: number, seconds: number): void {
    if (!(seconds >= 0) || !(tokens > 0)) return;
    const keep = this.decay;
    this.weight = this.weight * keep + 1;
    this.sumTokens = this.sumTokens * keep + tokens;
    this.sumSeconds = this.sumSeconds * keep + seconds;
    this.sumTokens2 = this.sumTokens2 * keep + tokens * tokens;
    this.sumTokensSeconds = this.sumTokensSeconds * keep + tokens * seconds;
  }

  /** The fitted line, or undefined until recent steps varied enough in size to fit one. */
  estimate(): { fixedSeconds: number; secondsPerToken: number } | undefined {
    if (this.weight < this.minimumSteps) return undefined;
    const meanTokens = this.sumTokens / this.weight;
    const variance = this.sumTokens2 / this.weight - meanTokens * meanTokens;
    // Steps that all had (nearly) the same size say nothing about the cost per token.
    if (variance < 1) return undefined;
    const meanSeconds = this.sumSeconds / this.weight;
    const covariance = this.sumTokensSeconds / this.weight - meanTokens * meanSeconds;
    const secondsPerToken = Math.max(0, covariance / variance);
    const fixedSeconds = Math.max(0, meanSeconds - secondsPerToken * meanTokens);
    return { fixedSeconds, secondsPerToken };
  }

  /**
   * How many prompt tokens a step with `generating` one-token sequences may add so that its
   * prompt part costs no more than the rest of it. Infinity while the cost is unknown, or where
   * tokens are nearly free next to the fixed part.
   */
  promptBudget(generating: number): number {
    const estimate = this.estimate();
    if (estimate === undefined || estimate.secondsPerToken === 0) return Number.POSITIVE_INFINITY;
    return generating + estimate.fixedSeconds / estimate.secondsPerToken;
  }
}
