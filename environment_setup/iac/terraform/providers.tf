# Azure ML workspace and its dependent resources, the Terraform way (the Bicep twin is in ../bicep).
# State lives in an Azure storage account; the pipeline passes the backend settings at `terraform init`
# (partial configuration), see iac-create-environment-pipeline-tf.yml.

terraform {
  required_version = ">= 1.6"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.0"
    }
  }

  backend "azurerm" {}
}

provider "azurerm" {
  # AzureRM 4 needs the subscription; it comes from var.subscription_id or ARM_SUBSCRIPTION_ID.
  subscription_id = var.subscription_id

  features {
    key_vault {
      # Keep soft-deleted vaults recoverable: purge protection is on (see main.tf).
      purge_soft_delete_on_destroy = false
      # After a teardown the vault stays soft-deleted for 90 days under the same name: the next apply recovers
      # it instead of failing to create it (the provider's default, written out because the pipelines rely on it).
      recover_soft_deleted_key_vaults = true
    }
    resource_group {
      prevent_deletion_if_contains_resources = true
    }
  }
}
